package restore

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/containers/common/pkg/config"
	"github.com/containers/podman/v4/pkg/annotations"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/podman-migrate/podman-migrate/internal/ckpt"
)

// privileges adds to the plan what the checkpoint asks for beyond an
// ordinary container: blockers, or warnings when allowed.
func (p *Plan) privileges(meta *ckpt.Metadata, allow bool) {
	for _, s := range privilegeProblems(meta.ConfigDump, meta.SpecDump) {
		if allow {
			p.warn("the checkpoint asks for more than an ordinary container: %s (allowed by --allow-privileged)", s)
		} else {
			p.block("the checkpoint asks for more than an ordinary container: %s; restore it only from a source you trust, with --allow-privileged", s)
		}
	}
}

// defaultDevices are the device nodes every container gets (runc creates
// them itself, podman lists none): listing them asks for nothing more.
var defaultDevices = map[string][3]int64{
	"/dev/null": {'c', 1, 3}, "/dev/zero": {'c', 1, 5}, "/dev/full": {'c', 1, 7},
	"/dev/random": {'c', 1, 8}, "/dev/urandom": {'c', 1, 9},
	"/dev/tty": {'c', 5, 0}, "/dev/console": {'c', 5, 1}, "/dev/ptmx": {'c', 5, 2},
}

// privConfig is what config.dump says about privileges, in podman's field
// names (libpod's ContainerConfig).
type privConfig struct {
	Privileged      bool                                `json:"privileged"`
	MountAllDevices bool                                `json:"mountAllDevices"`
	NetworkMode     string                              `json:"networkMode"`
	CreateNetNS     bool                                `json:"createNetNS"`
	DeviceHostSrc   []specs.LinuxDevice                 `json:"device_host_src"`
	NsCtr           map[specs.LinuxNamespaceType]string `json:"-"`
}

// privilegeProblems lists what a checkpoint asks for beyond an ordinary
// podman container, from its config.dump and spec.dump as podman 4 reads
// them on import (spec.dump becomes the container's runtime spec):
// privileged mode, the host's namespaces or others joined by path, host
// devices, capabilities beyond containers.conf's defaults, no seccomp,
// unmasked kernel paths, OCI hooks, and annotations that change what the
// runtime or CRIU do. None of these is needed by a container podman runs
// with its defaults; each gives the restored process, or whoever made the
// image, more of the target host.
func privilegeProblems(configDump, specDump []byte) []string {
	var out []string
	add := func(format string, a ...any) {
		if s := fmt.Sprintf(format, a...); !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	var cfg privConfig
	if err := json.Unmarshal(configDump, &cfg); err != nil {
		add("a config.dump that cannot be read (%v), so its privileges cannot be checked", err)
	}
	var raw map[string]json.RawMessage
	_ = json.Unmarshal(configDump, &raw)
	cfg.NsCtr = map[specs.LinuxNamespaceType]string{}
	for typ, key := range map[specs.LinuxNamespaceType]string{
		specs.IPCNamespace: "ipcNsCtr", specs.MountNamespace: "mountNsCtr", specs.NetworkNamespace: "netNsCtr",
		specs.PIDNamespace: "pidNsCtr", specs.UserNamespace: "userNsCtr", specs.UTSNamespace: "utsNsCtr",
		specs.CgroupNamespace: "cgroupNsCtr",
	} {
		var s string
		if json.Unmarshal(raw[key], &s) == nil && s != "" {
			cfg.NsCtr[typ] = s
		}
	}
	spec, specErr := ckpt.RuntimeSpec(specDump)
	if cfg.Privileged || strings.EqualFold(spec.Annotations["io.podman.annotations.privileged"], "TRUE") {
		add("privileged mode (--privileged)")
	}
	if specErr != nil {
		add("a spec.dump that cannot be read (%v), so its privileges cannot be checked", specErr)
		return out
	}
	if spec.Linux == nil {
		spec.Linux = &specs.Linux{}
	}
	if spec.Process == nil {
		spec.Process = &specs.Process{}
	}
	namespaces(&cfg, spec, add)
	devices(&cfg, spec, add)
	if caps := extraCapabilities(spec.Process.Capabilities); len(caps) > 0 {
		add("capabilities beyond podman's defaults: %s", shortList(caps))
	}
	if spec.Linux.Seccomp == nil {
		add("no seccomp filter (--security-opt seccomp=unconfined)")
	}
	if len(spec.Linux.MaskedPaths) == 0 {
		add("no masked kernel paths such as /proc/kcore (--security-opt unmask=ALL)")
	}
	if spec.Process.ApparmorProfile == "unconfined" {
		add("no AppArmor confinement (--security-opt apparmor=unconfined)")
	}
	if hooks := hookPaths(spec.Hooks); len(hooks) > 0 {
		add("OCI hooks that run on this host outside the container: %s", shortList(hooks))
	}
	var anns []string
	for k, v := range spec.Annotations {
		if k == specAnnCRIUConfig && ownCRIUConfig.MatchString(v) {
			continue // an earlier tcp-close restore's, dropped on the way
		}
		if runtimeAnnotation(k) {
			anns = append(anns, fmt.Sprintf("%s=%q", k, v))
		}
	}
	if len(anns) > 0 {
		slices.Sort(anns)
		add("annotations that change what the runtime or CRIU do: %s", shortList(anns))
	}
	return out
}

// namespaces reports host namespaces (one the spec lacks) and namespaces
// joined by path, which podman keeps as they are unless it makes the
// namespace itself (a network it creates, or a pod's shared one).
func namespaces(cfg *privConfig, spec *specs.Spec, add func(string, ...any)) {
	have := map[specs.LinuxNamespaceType]bool{}
	for _, ns := range spec.Linux.Namespaces {
		have[ns.Type] = true
		if ns.Path == "" || cfg.NsCtr[ns.Type] != "" || (ns.Type == specs.NetworkNamespace && cfg.CreateNetNS) {
			continue
		}
		add("the existing %s namespace at %s", ns.Type, ns.Path)
	}
	for _, typ := range []specs.LinuxNamespaceType{specs.PIDNamespace, specs.NetworkNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.MountNamespace} {
		if !have[typ] {
			add("the host's %s namespace%s", typ, hostFlag(typ))
		}
	}
	if cfg.NetworkMode == "host" {
		add("the host's %s namespace%s", specs.NetworkNamespace, hostFlag(specs.NetworkNamespace))
	}
}

func hostFlag(typ specs.LinuxNamespaceType) string {
	switch typ {
	case specs.NetworkNamespace:
		return " (--network host)"
	case specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace:
		return fmt.Sprintf(" (--%s host)", typ)
	}
	return ""
}

// devices reports device nodes beyond the defaults, and device cgroup
// rules that open more than those nodes.
func devices(cfg *privConfig, spec *specs.Spec, add func(string, ...any)) {
	var paths []string
	listed := map[[3]int64]bool{}
	for _, d := range spec.Linux.Devices {
		num := [3]int64{devType(d.Type), d.Major, d.Minor}
		listed[num] = true
		if def, ok := defaultDevices[path.Clean(d.Path)]; ok && def == num {
			continue
		}
		paths = append(paths, d.Path)
	}
	for _, d := range cfg.DeviceHostSrc {
		if !slices.Contains(paths, d.Path) {
			paths = append(paths, d.Path)
		}
	}
	if len(paths) > 0 {
		add("host devices %s", shortList(paths))
	}
	if cfg.MountAllDevices {
		add("all of the host's devices")
	}
	if spec.Linux.Resources == nil {
		return
	}
	var rules []string
	for _, r := range spec.Linux.Resources.Devices {
		// Only mknod ("m"), which runc allows for all devices itself, opens
		// nothing.
		if !r.Allow || strings.Trim(r.Access, "m") == "" {
			continue
		}
		if r.Type == "" || r.Type == "a" || r.Major == nil || r.Minor == nil {
			rules = append(rules, cgroupRule(r))
			continue
		}
		num := [3]int64{devType(r.Type), *r.Major, *r.Minor}
		if listed[num] || isDefaultDevice(num) {
			continue
		}
		rules = append(rules, cgroupRule(r))
	}
	if len(rules) > 0 {
		add("device access beyond its device nodes: %s", shortList(rules))
	}
}

func devType(t string) int64 {
	if t == "u" { // unbuffered character device
		return 'c'
	}
	if len(t) == 1 {
		return int64(t[0])
	}
	return 0
}

func isDefaultDevice(num [3]int64) bool {
	for _, d := range defaultDevices {
		if d == num {
			return true
		}
	}
	return false
}

func cgroupRule(r specs.LinuxDeviceCgroup) string {
	num := func(n *int64) string {
		if n == nil || *n < 0 {
			return "*"
		}
		return fmt.Sprint(*n)
	}
	typ := r.Type
	if typ == "" {
		typ = "a"
	}
	return fmt.Sprintf("%s %s:%s %s", typ, num(r.Major), num(r.Minor), r.Access)
}

// extraCapabilities lists capabilities in any set beyond containers.conf's
// default set (what podman gives a container unless told otherwise).
func extraCapabilities(c *specs.LinuxCapabilities) []string {
	if c == nil {
		return nil
	}
	var out []string
	for _, set := range [][]string{c.Bounding, c.Effective, c.Inheritable, c.Permitted, c.Ambient} {
		for _, name := range set {
			name = strings.ToUpper(name)
			if !strings.HasPrefix(name, "CAP_") {
				name = "CAP_" + name
			}
			if !slices.Contains(config.DefaultCapabilities, name) && !slices.Contains(out, name) {
				out = append(out, name)
			}
		}
	}
	slices.Sort(out)
	return out
}

func hookPaths(h *specs.Hooks) []string {
	if h == nil {
		return nil
	}
	var out []string
	for _, set := range [][]specs.Hook{h.Prestart, h.CreateRuntime, h.CreateContainer, h.StartContainer, h.Poststart, h.Poststop} {
		for _, hook := range set {
			if !slices.Contains(out, hook.Path) {
				out = append(out, hook.Path)
			}
		}
	}
	return out
}

// runtimeAnnotation reports whether an annotation changes what the runtime
// or CRIU do: runc hands org.criu.config to CRIU as its configuration
// file, crun acts on run.oci.*, the seccomp hook on trace-syscall, and
// io.kubernetes.cri-o.* is CRI-O's; podman itself writes only the
// informational cri-o keys it reserves (Created, TTY, …), which pass.
func runtimeAnnotation(k string) bool {
	switch {
	case k == "org.criu.config", k == "io.containers.trace-syscall":
		return true
	case strings.HasPrefix(k, "run.oci."):
		return true
	case strings.HasPrefix(k, "io.kubernetes.cri-o."):
		return !annotations.IsReservedAnnotation(k)
	}
	return false
}

// shortList joins names, shortening long lists.
func shortList(s []string) string {
	const show = 6
	if len(s) <= show {
		return strings.Join(s, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(s[:show], ", "), len(s)-show)
}
