package restore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path"
	"sort"
	"strings"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/dump"
	"github.com/podman-migrate/podman-migrate/internal/mountmap"
)

// relocated is what the plan decided to change in podman's archive.
type relocated struct {
	edits   ckpt.Edits
	cleared []string // host-specific config.dump fields removed
	changes []string // for the log: "bind /a -> /b at /data"
	volumes []string // volumes the restore will create (cleanup)
	dropIP  bool     // a kept address would not fit its new network
	// The CRIU configuration written for the restore when it closes TCP
	// connections that way (Plan.TCPClose is TCPCloseCRIUConfig).
	criuConfig *criuConfig
}

// parseNameMaps parses OLD=NEW pairs (volumes, networks).
func parseNameMaps(flag string, vals []string) (map[string]string, error) {
	out := map[string]string{}
	to := map[string]string{}
	for _, v := range vals {
		old, nw, ok := strings.Cut(v, "=")
		if !ok || !validName(old) || !validName(nw) {
			return nil, fmt.Errorf("%w: %s %q: want OLD=NEW, names of letters, digits, '_', '.' and '-'", mountmap.ErrBadMap, flag, v)
		}
		if _, dup := out[old]; dup {
			return nil, fmt.Errorf("%w: %s %s given twice", mountmap.ErrBadMap, flag, old)
		}
		if prev, dup := to[nw]; dup {
			return nil, fmt.Errorf("%w: %s maps both %s and %s to %s", mountmap.ErrBadMap, flag, prev, old, nw)
		}
		out[old], to[nw] = nw, old
	}
	return out, nil
}

// validName is podman's rule for volume and network names.
func validName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && (i == 0 || (r != '_' && r != '.' && r != '-')) {
			return false
		}
	}
	return true
}

// relocate works out the edits to config.dump, spec.dump, network.status
// and the volume members, and records in the plan what each mount, volume
// and network becomes and whether the target has it.
func (p *Plan) relocate(ctx context.Context, t *target, meta *ckpt.Metadata, o PullOptions) error {
	rl := &relocating{p: p, t: t, meta: meta, o: o,
		r: &relocated{edits: ckpt.Edits{Replace: map[string][]byte{}, Rename: map[string]string{}}}}
	for _, step := range []func(context.Context) error{
		rl.parseMaps,
		rl.readDumps,
		rl.relocateVolumes,
		rl.relocateBinds,
		rl.relocateNetworks,
		rl.baseByID,
		rl.tcpClose,
		rl.writeDumps,
	} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	p.relocated = rl.r
	return nil
}

// relocating is one relocation: the dumps being edited and what each step
// learned, for the next.
type relocating struct {
	p    *Plan
	t    *target
	meta *ckpt.Metadata
	o    PullOptions
	r    *relocated

	mountMaps      mountmap.Maps
	volMap, netMap map[string]string
	cfg            *dump.Config
	spec           *ckpt.Spec
	cspec          *ckpt.Spec        // config.dump's spec; nil when unreadable
	sm, cm         []ckpt.SpecMount  // the mounts of spec and cspec
	volumeAt       map[string]string // volume name by destination
	status         []byte            // the new network.status; nil: unchanged
}

// parseMaps reads the flags first: a mistyped one fails before any lookup.
func (rl *relocating) parseMaps(context.Context) error {
	var err error
	if rl.mountMaps, err = mountmap.Parse(rl.o.MountMap); err != nil {
		return err
	}
	if rl.volMap, err = parseNameMaps("--volume-map", rl.o.VolumeMap); err != nil {
		return err
	}
	rl.netMap, err = parseNameMaps("--network-map", rl.o.NetworkMap)
	return err
}

// readDumps parses config.dump, without the source host's paths, and the
// mounts of spec.dump and of the spec config.dump keeps.
func (rl *relocating) readDumps(context.Context) error {
	var err error
	if rl.cfg, err = dump.ReadConfig(bytes.NewReader(rl.meta.ConfigDump)); err != nil {
		return err
	}
	rl.r.cleared = rl.cfg.Neutralize()
	if rl.spec, err = ckpt.ParseSpec(rl.meta.SpecDump); err != nil {
		return fmt.Errorf("%w: %s is not a JSON object", ckpt.ErrNotCheckpoint, ckpt.SpecDump)
	}
	if rl.sm, err = rl.spec.Mounts(); err != nil {
		return fmt.Errorf("%w: reading the spec's mounts: %w", ckpt.ErrNotCheckpoint, err)
	}
	// config.dump keeps the spec the container was created with: its
	// mounts must move with spec.dump's, matched by destination.
	rl.cspec, _ = ckpt.ParseSpec(rl.cfg.Raw("spec"))
	if rl.cspec != nil {
		if rl.cm, err = rl.cspec.Mounts(); err != nil {
			return fmt.Errorf("%w: reading the spec's mounts: %w", ckpt.ErrNotCheckpoint, err)
		}
	}
	return nil
}

// setSource moves the mounts at dest in both specs.
func (rl *relocating) setSource(dest, src string) {
	for _, ms := range [][]ckpt.SpecMount{rl.sm, rl.cm} {
		for i := range ms {
			if ms[i].Destination == dest {
				ms[i].SetSource(src)
			}
		}
	}
}

// relocateVolumes plans each named volume, then renames those
// --volume-map names in config.dump; a map naming no volume is a mistake.
func (rl *relocating) relocateVolumes(ctx context.Context) error {
	rl.volumeAt = map[string]string{}
	known := map[string]bool{}
	for _, v := range rl.cfg.NamedVolumeMounts() {
		known[v.Name] = true
		rl.volumeAt[v.Destination] = v.Name
		if err := rl.relocateVolume(ctx, v); err != nil {
			return err
		}
	}
	for old := range rl.volMap {
		if !known[old] {
			return fmt.Errorf("%w: --volume-map %s: the checkpoint has no volume %q (it has %s)", mountmap.ErrBadMap, old, old, listOrNone(keys(known)))
		}
	}
	if len(rl.volMap) > 0 {
		if err := renameVolumes(rl.cfg, rl.volMap); err != nil {
			return err
		}
		rl.p.checkVolumeMembers(rl.meta, rl.volMap)
	}
	return nil
}

// relocateVolume plans one named volume, which the restore creates: it
// must not exist here. podman 4.3.1 keeps spec.dump's source, which lies
// in the source host's volume directory; it is pointed at this host's.
func (rl *relocating) relocateVolume(ctx context.Context, v dump.VolumeMount) error {
	nw := v.Name
	if m, ok := rl.volMap[v.Name]; ok {
		nw = m
	}
	vp := VolumePlan{Name: v.Name, New: nw, Destination: v.Destination}
	exists, err := rl.t.c.VolumeExists(ctx, nw)
	if err != nil {
		return err
	}
	if exists {
		vp.Collides = true
		if nw == v.Name {
			rl.p.block("volume %q %s: restore it under another name with --volume-map %s=NEWNAME", nw, ErrConflict, v.Name)
		} else {
			rl.p.block("volume %q %s: choose another name in --volume-map %s=NEWNAME", nw, ErrConflict, v.Name)
		}
	}
	rl.p.Volumes = append(rl.p.Volumes, vp)
	rl.r.volumes = append(rl.r.volumes, nw)
	info, err := rl.t.info(ctx) // where podman keeps volumes
	if err != nil {
		return err
	}
	if info.Store.VolumePath != "" {
		rl.setSource(v.Destination, path.Join(info.Store.VolumePath, nw, "_data"))
	}
	if nw != v.Name {
		rl.r.edits.Rename[ckpt.VolumesDir+"/"+v.Name+".tar"] = ckpt.VolumesDir + "/" + nw + ".tar"
		rl.r.changes = append(rl.r.changes, fmt.Sprintf("volume %s -> %s at %s", v.Name, nw, v.Destination))
	}
	return nil
}

// relocateBinds applies --mount-map to the bind mounts the user gave the
// container, as they are now: a relocation applies to every mount at its
// destination. A map that matches none is likely a typo.
func (rl *relocating) relocateBinds(context.Context) error {
	// push records whether each source was a file or a directory
	// (podman's images do not, and then only existence is checked).
	kinds := rl.meta.Provenance().BindKinds
	used := map[string]bool{}
	for i := range rl.sm {
		if !rl.sm[i].UserBind(rl.volumeAt) {
			continue
		}
		dest, src := rl.sm[i].Destination, rl.sm[i].Source
		nw, _ := rl.mountMaps.Apply(src, used)
		mp := MountPlan{Destination: dest, Old: src, New: nw, ReadOnly: rl.sm[i].ReadOnly()}
		if nw != src {
			rl.setSource(dest, nw)
			rl.r.changes = append(rl.r.changes, fmt.Sprintf("bind mount %s -> %s at %s", src, nw, dest))
		}
		rl.checkBindSource(&mp, kinds)
		rl.p.Mounts = append(rl.p.Mounts, mp)
	}
	for _, m := range rl.mountMaps {
		if !used[m.Src] {
			rl.p.warn("--mount-map %s=%s matches no bind mount of the checkpoint", m.Src, m.Dst)
		}
	}
	return nil
}

// checkBindSource blocks a restore whose bind mount source is missing
// here, or of another kind than the checkpoint's: CRIU needs the kind it
// had.
func (rl *relocating) checkBindSource(mp *MountPlan, kinds ckpt.BindKinds) {
	nw, dest := mp.New, mp.Destination
	fi, err := rl.t.stat(nw)
	switch {
	case errors.Is(err, podman.ErrRemote):
		mp.State = "unknown"
		rl.p.warn("cannot check bind mount source %s: the podman service is not on this machine", nw)
	case err != nil:
		mp.State = "missing"
		fix := fmt.Sprintf("--mount-map %s=/NEW/PATH", mp.Old)
		if nw != mp.Old {
			fix = "a --mount-map to a path that exists"
		}
		rl.p.block("bind mount source %s (mounted at %s) does not exist on this host: create it, or relocate it with %s", nw, dest, fix)
	default:
		mp.Dir = fi.IsDir()
		mp.State = "ok"
		if want, known := kinds.Dir(dest); known && want != fi.IsDir() {
			mp.State = "wrong type"
			rl.p.block("bind mount source %s (mounted at %s) is a %s here, the checkpoint had a %s", nw, dest, kind(fi.IsDir()), kind(want))
		}
	}
}

// baseByID names the base image by its ID in config.dump when the plan
// says ByID: podman's restore pulls the image it names unless it finds it
// here, and a digest reference it may not find locally.
func (rl *relocating) baseByID(context.Context) error {
	if !rl.p.Base.ByID {
		return nil
	}
	id, err := json.Marshal(rl.p.Base.ID)
	if err != nil {
		return err
	}
	rl.cfg.SetRaw("rootfsImageName", id)
	return nil
}

// writeDumps turns the edited dumps into the archive's edits.
func (rl *relocating) writeDumps(context.Context) error {
	if err := rl.spec.SetMounts(rl.sm); err != nil {
		return err
	}
	if rl.cspec != nil && rl.cm != nil {
		if err := rl.cspec.SetMounts(rl.cm); err != nil {
			return err
		}
		b, err := rl.cspec.Bytes()
		if err != nil {
			return err
		}
		rl.cfg.SetRaw("spec", b)
	}
	cb, err := rl.cfg.Bytes()
	if err != nil {
		return err
	}
	sb, err := rl.spec.Bytes()
	if err != nil {
		return err
	}
	rl.r.edits.Replace[ckpt.ConfigDump] = cb
	rl.r.edits.Replace[ckpt.SpecDump] = sb
	if rl.status != nil {
		rl.r.edits.Replace[ckpt.NetworkStatus] = rl.status
	}
	return nil
}

func kind(dir bool) string {
	if dir {
		return "directory"
	}
	return "file"
}

// renameVolumes renames config.dump's namedVolumes entries.
func renameVolumes(cfg *dump.Config, volMap map[string]string) error {
	var vols []map[string]json.RawMessage
	if err := json.Unmarshal(cfg.Raw("namedVolumes"), &vols); err != nil {
		return fmt.Errorf("%w: reading namedVolumes: %w", ckpt.ErrNotCheckpoint, err)
	}
	for _, v := range vols {
		var name string
		_ = json.Unmarshal(v["volumeName"], &name)
		if nw, ok := volMap[name]; ok {
			b, _ := json.Marshal(nw)
			v["volumeName"] = b
		}
	}
	b, err := json.Marshal(vols)
	if err != nil {
		return err
	}
	cfg.SetRaw("namedVolumes", b)
	return nil
}

// checkVolumeMembers makes sure a renamed volume's content travels: our
// images name volume layers by volume.
func (p *Plan) checkVolumeMembers(meta *ckpt.Metadata, volMap map[string]string) {
	if meta.Provenance().Format == "" || len(meta.Manifest.Layers) == 0 {
		// podman's single layer, or its archive read live: the rename
		// finds the member or fails loudly
		return
	}
	have := map[string]bool{}
	for _, l := range meta.Manifest.Layers {
		if v := l.Annotations[ckpt.AnnLayerVolume]; v != "" {
			have[v] = true
		}
	}
	for old := range volMap {
		if !have[old] {
			p.warn("volume %s has no content layer in the checkpoint; %s will be created empty", old, volMap[old])
		}
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// relocateNetworks renames the container's networks under --network-map
// (config.dump's newNetworks and network.status), checks that each exists
// here, and drops a kept address that would not fit its network. The new
// network.status waits in rl.status for writeDumps.
func (rl *relocating) relocateNetworks(ctx context.Context) error {
	n := readNetworks(rl.cfg, rl.meta)
	for old := range rl.netMap {
		if !n.names[old] {
			return fmt.Errorf("%w: --network-map %s: the container was not on network %q (it was on %s)", mountmap.ErrBadMap, old, old, listOrNone(keys(n.names)))
		}
	}
	for _, old := range keys(n.names) {
		if err := rl.relocateNetwork(ctx, n, old); err != nil {
			return err
		}
	}
	if rl.r.dropIP {
		n.dropStaticIPs()
	}
	var err error
	rl.status, err = n.write(rl.cfg)
	return err
}

// networks are the container's networks as both dumps record them, being
// renamed.
type networks struct {
	nets    map[string]json.RawMessage // config.dump's newNetworks
	status  *ckpt.NetStatus            // nil: none recorded
	names   map[string]bool            // in either
	changed bool
}

// readNetworks gathers the networks of both dumps: either may lack one.
func readNetworks(cfg *dump.Config, meta *ckpt.Metadata) *networks {
	n := &networks{names: map[string]bool{}}
	_ = json.Unmarshal(cfg.Raw("newNetworks"), &n.nets)
	n.status, _ = ckpt.ParseNetStatus(meta.NetworkStatus)
	for name := range n.nets {
		n.names[name] = true
	}
	for _, name := range n.status.Names() {
		n.names[name] = true
	}
	return n
}

// relocateNetwork plans one network and renames it under --network-map.
func (rl *relocating) relocateNetwork(ctx context.Context, n *networks, old string) error {
	nw := old
	if m, ok := rl.netMap[old]; ok {
		nw = m
	}
	np, err := rl.planNetwork(ctx, n, old, nw)
	if err != nil {
		return err
	}
	if nw != old {
		n.rename(old, nw)
		rl.r.changes = append(rl.r.changes, fmt.Sprintf("network %s -> %s", old, nw))
	}
	rl.p.Networks = append(rl.p.Networks, np)
	return nil
}

// planNetwork works out which address the restore keeps on network nw.
// What podman 4.3.1 asks its IPAM for (measured): under the checkpointed
// name, the addresses network.status recorded; under a new --name, the
// static_ips the container was created with. Neither with
// --ignore-static-ip.
func (rl *relocating) planNetwork(ctx context.Context, n *networks, old, nw string) (NetworkPlan, error) {
	np := NetworkPlan{Old: old, New: nw}
	ips, mac := statusAddrs(n.status, old)
	if rl.o.Name != "" {
		ips = staticIPs(n.nets[old])
	}
	if len(ips) > 0 {
		np.IP = strings.Join(ips, ",")
	}
	np.MAC = mac
	np.KeepIP = !rl.o.IgnoreStaticIP && len(ips) > 0
	if err := rl.checkNetwork(ctx, &np, ips); err != nil {
		return np, err
	}
	if !np.KeepIP && len(ips) > 0 && np.Note == "" {
		np.Note = "podman will assign a new address"
	}
	return np, nil
}

// checkNetwork blocks a restore onto a network this host lacks, and gives
// up a kept address outside the network's subnets, which podman's IPAM
// would refuse.
func (rl *relocating) checkNetwork(ctx context.Context, np *NetworkPlan, ips []string) error {
	old, nw := np.Old, np.New
	n, err := rl.t.c.InspectNetwork(ctx, nw)
	switch {
	case errors.Is(err, podman.ErrNotFound):
		if nw == old {
			rl.p.block("network %q does not exist on this host: create it (podman network create %s) or attach another with --network-map %s=NETWORK", nw, nw, old)
		} else {
			rl.p.block("network %q (for %s) does not exist on this host: create it, or map %s to one that exists", nw, old, old)
		}
	case err != nil:
		return err
	default:
		np.Exists = true
		if np.KeepIP {
			if outside := outsideSubnets(ips, n); len(outside) > 0 {
				np.KeepIP = false
				rl.r.dropIP = true
				np.Note = fmt.Sprintf("address %s is outside %s's subnets (%s): podman will assign a new one", strings.Join(outside, ","), nw, subnetList(n))
			}
		}
	}
	return nil
}

// rename moves network old's entries in both dumps to nw.
func (n *networks) rename(old, nw string) {
	n.changed = true
	if v, ok := n.nets[old]; ok {
		delete(n.nets, old)
		n.nets[nw] = v
	}
	n.status.Rename(old, nw)
}

// dropStaticIPs removes the creation-time address requests: the restore
// asks podman to ignore recorded addresses, and these must go too.
func (n *networks) dropStaticIPs() {
	for name, v := range n.nets {
		var opts map[string]json.RawMessage
		if json.Unmarshal(v, &opts) == nil && opts != nil {
			delete(opts, "static_ips")
			b, _ := json.Marshal(opts)
			n.nets[name] = b
			n.changed = true
		}
	}
}

// write sets config.dump's newNetworks and returns the new network.status,
// nil when neither changed.
func (n *networks) write(cfg *dump.Config) ([]byte, error) {
	if !n.changed {
		return nil, nil
	}
	if n.nets != nil {
		b, err := json.Marshal(n.nets)
		if err != nil {
			return nil, err
		}
		cfg.SetRaw("newNetworks", b)
	}
	if n.status == nil {
		return nil, nil
	}
	return n.status.Bytes()
}

// staticIPs reads the static_ips of one newNetworks entry.
func staticIPs(raw json.RawMessage) []string {
	var opts struct {
		StaticIPs []string `json:"static_ips"`
	}
	_ = json.Unmarshal(raw, &opts)
	sort.Strings(opts.StaticIPs)
	return opts.StaticIPs
}

// statusAddrs reads the addresses network.status records of one network,
// sorted, and its MAC address.
func statusAddrs(status *ckpt.NetStatus, name string) ([]string, string) {
	att, _ := status.Network(name)
	cidrs, mac := att.Addresses()
	var ips []string
	for _, c := range cidrs {
		if ip, _, err := net.ParseCIDR(c); err == nil {
			ips = append(ips, ip.String())
		}
	}
	sort.Strings(ips)
	return ips, mac
}

func outsideSubnets(ips []string, n *podman.Network) []string {
	var out []string
	for _, s := range ips {
		ip := net.ParseIP(s)
		in := false
		for _, sn := range n.Subnets {
			if _, cidr, err := net.ParseCIDR(sn.Subnet); err == nil && cidr.Contains(ip) {
				in = true
			}
		}
		if !in {
			out = append(out, s)
		}
	}
	return out
}

func subnetList(n *podman.Network) string {
	var s []string
	for _, sn := range n.Subnets {
		s = append(s, sn.Subnet)
	}
	return listOrNone(s)
}

// NameMaps parses OLD=NEW maps of podman names (--network-map,
// --volume-map) as pull does.
func NameMaps(flag string, vals []string) (map[string]string, error) {
	return parseNameMaps(flag, vals)
}

// specNamespaces are the runtime spec's names of podman's namespaces.
var specNamespaces = map[string]string{"net": "network", "ipc": "ipc", "pid": "pid", "uts": "uts", "cgroup": "cgroup", "user": "user", "mount": "mount"}

// Join makes the restored container join namespace ns ("net") of the
// container id on the target, whose process is pid: config.dump names the
// container and spec.dump the namespace's path, which podman, restoring
// no pod member, takes as it is. A group's pull calls it once the other
// was restored.
func (p *Plan) Join(ns, id string, pid int) error {
	typ, ok := specNamespaces[ns]
	if !ok || p.relocated == nil || pid <= 0 {
		return fmt.Errorf("joining the %s namespace of %s (pid %d): not possible", ns, id, pid)
	}
	ed := p.relocated.edits.Replace
	cfg, err := dump.ReadConfig(bytes.NewReader(ed[ckpt.ConfigDump]))
	if err != nil {
		return err
	}
	if err := cfg.SetJoined(ns, id); err != nil {
		return err
	}
	spec, err := ckpt.ParseSpec(ed[ckpt.SpecDump])
	if err != nil {
		return err
	}
	if err := spec.SetNamespacePath(typ, fmt.Sprintf("/proc/%d/ns/%s", pid, ns)); err != nil {
		return fmt.Errorf("%w: %w", ckpt.ErrNotCheckpoint, err)
	}
	if ed[ckpt.ConfigDump], err = cfg.Bytes(); err != nil {
		return err
	}
	ed[ckpt.SpecDump], err = spec.Bytes()
	return err
}
