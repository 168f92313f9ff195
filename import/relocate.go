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

// ErrBadMap is wrapped when a --mount-map, --volume-map or --network-map
// value is malformed or names something the checkpoint does not have; the
// same error as mountmap's, so one test covers both.
var ErrBadMap = mountmap.ErrBadMap

// relocated is what the plan decided to change in podman's archive.
type relocated struct {
	edits   ckpt.Edits
	cleared []string // host-specific config.dump fields removed
	changes []string // for the log: "bind /a -> /b at /data"
	volumes []string // volumes the restore will create (cleanup)
	dropIP  bool     // a kept address would not fit its new network
}

// parseNameMaps parses OLD=NEW pairs (volumes, networks).
func parseNameMaps(flag string, vals []string) (map[string]string, error) {
	out := map[string]string{}
	to := map[string]string{}
	for _, v := range vals {
		old, nw, ok := strings.Cut(v, "=")
		if !ok || !validName(old) || !validName(nw) {
			return nil, fmt.Errorf("%w: %s %q: want OLD=NEW, names of letters, digits, '_', '.' and '-'", ErrBadMap, flag, v)
		}
		if _, dup := out[old]; dup {
			return nil, fmt.Errorf("%w: %s %s given twice", ErrBadMap, flag, old)
		}
		if prev, dup := to[nw]; dup {
			return nil, fmt.Errorf("%w: %s maps both %s and %s to %s", ErrBadMap, flag, prev, old, nw)
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

// mounts is a list of OCI mounts edited in place, unknown fields kept.
type mounts []map[string]json.RawMessage

func (m mounts) str(i int, key string) string {
	var s string
	_ = json.Unmarshal(m[i][key], &s)
	return s
}

func (m mounts) set(i int, key, val string) {
	b, _ := json.Marshal(val)
	m[i][key] = b
}

func (m mounts) readOnly(i int) bool {
	var opts []string
	_ = json.Unmarshal(m[i]["options"], &opts)
	for _, o := range opts {
		if o == "ro" {
			return true
		}
	}
	return false
}

// specMounts reads the "mounts" list of an OCI spec held as raw JSON.
func specMounts(spec map[string]json.RawMessage) (mounts, error) {
	var m mounts
	if raw, ok := spec["mounts"]; ok {
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("%w: reading the spec's mounts: %w", ckpt.ErrNotCheckpoint, err)
		}
	}
	// A null entry would be a nil map, which set cannot write to.
	for i := range m {
		if m[i] == nil {
			return nil, fmt.Errorf("%w: reading the spec's mounts: mount %d is not an object", ckpt.ErrNotCheckpoint, i)
		}
	}
	return m, nil
}

// relocate works out the edits to config.dump, spec.dump, network.status
// and the volume members, and records in the plan what each mount, volume
// and network becomes and whether the target has it.
func (p *Plan) relocate(ctx context.Context, t *target, meta *ckpt.Metadata, o PullOptions) error {
	mountMaps, err := mountmap.Parse(o.MountMap)
	if err != nil {
		return err
	}
	volMap, err := parseNameMaps("--volume-map", o.VolumeMap)
	if err != nil {
		return err
	}
	netMap, err := parseNameMaps("--network-map", o.NetworkMap)
	if err != nil {
		return err
	}
	cfg, err := dump.ReadConfig(bytes.NewReader(meta.ConfigDump))
	if err != nil {
		return err
	}
	r := &relocated{edits: ckpt.Edits{Replace: map[string][]byte{}, Rename: map[string]string{}}}
	r.cleared = cfg.Neutralize()
	var spec map[string]json.RawMessage
	if err := json.Unmarshal(meta.SpecDump, &spec); err != nil || spec == nil {
		return fmt.Errorf("%w: %s is not a JSON object", ckpt.ErrNotCheckpoint, ckpt.SpecDump)
	}
	sm, err := specMounts(spec)
	if err != nil {
		return err
	}
	// config.dump keeps the spec the container was created with: its
	// mounts must move with spec.dump's, matched by destination.
	var cspec map[string]json.RawMessage
	_ = json.Unmarshal(cfg.Raw("spec"), &cspec)
	cm, err := specMounts(cspec)
	if err != nil {
		return err
	}
	setSource := func(dest, src string) {
		for _, m := range []mounts{sm, cm} {
			for i := range m {
				if m.str(i, "destination") == dest {
					m.set(i, "source", src)
				}
			}
		}
	}

	// Named volumes: podman 4.3.1 keeps spec.dump's source, which lies in
	// the source host's volume directory; point it at this host's.
	volDests := map[string]bool{}
	known := map[string]bool{}
	for _, v := range cfg.NamedVolumeMounts() {
		known[v.Name] = true
		volDests[v.Destination] = true
		nw := v.Name
		if m, ok := volMap[v.Name]; ok {
			nw = m
		}
		vp := VolumePlan{Name: v.Name, New: nw, Destination: v.Destination}
		exists, err := t.c.VolumeExists(ctx, nw)
		if err != nil {
			return err
		}
		if exists {
			vp.Collides = true
			if nw == v.Name {
				p.block("volume %q %s: restore it under another name with --volume-map %s=NEWNAME", nw, ErrConflict, v.Name)
			} else {
				p.block("volume %q %s: choose another name in --volume-map %s=NEWNAME", nw, ErrConflict, v.Name)
			}
		}
		p.Volumes = append(p.Volumes, vp)
		r.volumes = append(r.volumes, nw)
		if t.info.Store.VolumePath != "" {
			src := path.Join(t.info.Store.VolumePath, nw, "_data")
			setSource(v.Destination, src)
		}
		if nw != v.Name {
			r.edits.Rename[ckpt.VolumesDir+"/"+v.Name+".tar"] = ckpt.VolumesDir + "/" + nw + ".tar"
			r.changes = append(r.changes, fmt.Sprintf("volume %s -> %s at %s", v.Name, nw, v.Destination))
		}
	}
	for old := range volMap {
		if !known[old] {
			return fmt.Errorf("%w: --volume-map %s: the checkpoint has no volume %q (it has %s)", ErrBadMap, old, old, listOrNone(keys(known)))
		}
	}
	if len(volMap) > 0 {
		if err := renameVolumes(cfg, volMap); err != nil {
			return err
		}
		p.checkVolumeMembers(meta, volMap)
	}

	// Bind mounts the user gave the container.
	used := map[string]bool{}
	for i := range sm {
		dest, src := sm.str(i, "destination"), sm.str(i, "source")
		if sm.str(i, "type") != "bind" || volDests[dest] || ckpt.PodmanManaged(dest, src) {
			continue
		}
		nw, _ := mountMaps.Apply(src, used)
		mp := MountPlan{Destination: dest, Old: src, New: nw, ReadOnly: sm.readOnly(i)}
		if nw != src {
			setSource(dest, nw)
			r.changes = append(r.changes, fmt.Sprintf("bind mount %s -> %s at %s", src, nw, dest))
		}
		fi, err := t.stat(nw)
		switch {
		case errors.Is(err, podman.ErrRemote):
			mp.State = "unknown"
			p.warn("cannot check bind mount source %s: the podman service is not on this machine", nw)
		case err != nil:
			mp.State = "missing"
			fix := fmt.Sprintf("--mount-map %s=/NEW/PATH", src)
			if nw != src {
				fix = "a --mount-map to a path that exists"
			}
			p.block("bind mount source %s (mounted at %s) does not exist on this host: create it, or relocate it with %s", nw, dest, fix)
		default:
			mp.Dir = fi.IsDir()
			mp.State = "ok"
			// The checkpoint cannot say whether the source was a file or
			// a directory; CRIU needs the same kind, and the destination
			// in the image's root file system shows which it was.
			if want, known := wantDir(meta, dest); known && want != fi.IsDir() {
				mp.State = "wrong type"
				p.block("bind mount source %s (mounted at %s) is a %s here, the checkpoint had a %s", nw, dest, kind(fi.IsDir()), kind(want))
			}
		}
		p.Mounts = append(p.Mounts, mp)
	}
	for _, m := range mountMaps {
		if !used[m.Src] {
			p.warn("--mount-map %s=%s matches no bind mount of the checkpoint", m.Src, m.Dst)
		}
	}

	status, err := p.relocateNetworks(ctx, t, meta, cfg, netMap, o, r)
	if err != nil {
		return err
	}

	if err := setRaw(spec, "mounts", sm); err != nil {
		return err
	}
	if cspec != nil && cm != nil {
		if err := setRaw(cspec, "mounts", cm); err != nil {
			return err
		}
		b, err := json.Marshal(cspec)
		if err != nil {
			return err
		}
		cfg.SetRaw("spec", b)
	}
	cb, err := cfg.Bytes()
	if err != nil {
		return err
	}
	sb, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	r.edits.Replace[ckpt.ConfigDump] = cb
	r.edits.Replace[ckpt.SpecDump] = sb
	if status != nil {
		r.edits.Replace[ckpt.NetworkStatus] = status
	}
	p.relocated = r
	return nil
}

// wantDir says whether the checkpoint's bind mount at dest had a directory
// as its source. push records it (AnnBindKinds); podman's images do not,
// and then only existence is checked.
func wantDir(meta *ckpt.Metadata, dest string) (dir, known bool) {
	var kinds map[string]string
	if json.Unmarshal([]byte(meta.Manifest.Annotations[ckpt.AnnBindKinds]), &kinds) != nil {
		return false, false
	}
	switch kinds[dest] {
	case "dir":
		return true, true
	case "file":
		return false, true
	}
	return false, false
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
	if meta.Manifest.Annotations[ckpt.AnnFormat] == "" {
		return // podman's single layer: the rename finds the member or fails loudly
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

func setRaw(obj map[string]json.RawMessage, key string, v any) error {
	if v == nil {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, had := obj[key]; had || string(b) != "null" {
		obj[key] = b
	}
	return nil
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
// here, and drops a kept address that would not fit its network. It
// returns the new network.status, nil when unchanged.
func (p *Plan) relocateNetworks(ctx context.Context, t *target, meta *ckpt.Metadata, cfg *dump.Config, netMap map[string]string, o PullOptions, r *relocated) ([]byte, error) {
	var nets map[string]json.RawMessage
	_ = json.Unmarshal(cfg.Raw("newNetworks"), &nets)
	var status map[string]json.RawMessage
	_ = json.Unmarshal(meta.NetworkStatus, &status)
	names := map[string]bool{}
	for n := range nets {
		names[n] = true
	}
	for n := range status {
		names[n] = true
	}
	for old := range netMap {
		if !names[old] {
			return nil, fmt.Errorf("%w: --network-map %s: the container was not on network %q (it was on %s)", ErrBadMap, old, old, listOrNone(keys(names)))
		}
	}
	// What podman 4.3.1 asks its IPAM for (measured): under the
	// checkpointed name, the addresses network.status recorded; under a new
	// --name, the static_ips the container was created with. Neither with
	// --ignore-static-ip.
	keepIP := !o.IgnoreStaticIP
	changed := false
	for _, old := range keys(names) {
		nw := old
		if m, ok := netMap[old]; ok {
			nw = m
		}
		np := NetworkPlan{Old: old, New: nw}
		ips, mac := statusAddrs(status[old])
		if o.Name != "" {
			ips = staticIPs(nets[old])
		}
		if len(ips) > 0 {
			np.IP = strings.Join(ips, ",")
		}
		np.MAC = mac
		np.KeepIP = keepIP && len(ips) > 0
		n, err := t.c.InspectNetwork(ctx, nw)
		switch {
		case errors.Is(err, podman.ErrNotFound):
			if nw == old {
				p.block("network %q does not exist on this host: create it (podman network create %s) or attach another with --network-map %s=NETWORK", nw, nw, old)
			} else {
				p.block("network %q (for %s) does not exist on this host: create it, or map %s to one that exists", nw, old, old)
			}
		case err != nil:
			return nil, err
		default:
			np.Exists = true
			if np.KeepIP {
				if outside := outsideSubnets(ips, n); len(outside) > 0 {
					np.KeepIP = false
					r.dropIP = true
					np.Note = fmt.Sprintf("address %s is outside %s's subnets (%s): podman will assign a new one", strings.Join(outside, ","), nw, subnetList(n))
				}
			}
		}
		if !np.KeepIP && len(ips) > 0 && np.Note == "" {
			np.Note = "podman will assign a new address"
		}
		if nw != old {
			changed = true
			if v, ok := nets[old]; ok {
				delete(nets, old)
				nets[nw] = v
			}
			if v, ok := status[old]; ok {
				delete(status, old)
				status[nw] = v
			}
			r.changes = append(r.changes, fmt.Sprintf("network %s -> %s", old, nw))
		}
		p.Networks = append(p.Networks, np)
	}
	if r.dropIP {
		// The restore asks podman to ignore recorded addresses, and the
		// creation-time request for one must go too.
		for n, v := range nets {
			var opts map[string]json.RawMessage
			if json.Unmarshal(v, &opts) == nil && opts != nil {
				delete(opts, "static_ips")
				b, _ := json.Marshal(opts)
				nets[n] = b
				changed = true
			}
		}
	}
	if !changed {
		return nil, nil
	}
	if nets != nil {
		b, err := json.Marshal(nets)
		if err != nil {
			return nil, err
		}
		cfg.SetRaw("newNetworks", b)
	}
	if status == nil {
		return nil, nil
	}
	return json.Marshal(status)
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

// statusAddrs reads the addresses of one network.status entry.
func statusAddrs(raw json.RawMessage) ([]string, string) {
	var st struct {
		Interfaces map[string]struct {
			Subnets []struct {
				IPNet string `json:"ipnet"`
			} `json:"subnets"`
			MAC string `json:"mac_address"`
		} `json:"interfaces"`
	}
	_ = json.Unmarshal(raw, &st)
	var ips []string
	var mac string
	for _, ifc := range st.Interfaces {
		for _, s := range ifc.Subnets {
			if ip, _, err := net.ParseCIDR(s.IPNet); err == nil {
				ips = append(ips, ip.String())
			}
		}
		mac = ifc.MAC
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
