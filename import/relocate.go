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
	spec, err := ckpt.ParseSpec(meta.SpecDump)
	if err != nil {
		return fmt.Errorf("%w: %s is not a JSON object", ckpt.ErrNotCheckpoint, ckpt.SpecDump)
	}
	sm, err := spec.Mounts()
	if err != nil {
		return fmt.Errorf("%w: reading the spec's mounts: %w", ckpt.ErrNotCheckpoint, err)
	}
	// config.dump keeps the spec the container was created with: its
	// mounts must move with spec.dump's, matched by destination.
	var cm []ckpt.SpecMount
	cspec, _ := ckpt.ParseSpec(cfg.Raw("spec"))
	if cspec != nil {
		if cm, err = cspec.Mounts(); err != nil {
			return fmt.Errorf("%w: reading the spec's mounts: %w", ckpt.ErrNotCheckpoint, err)
		}
	}
	setSource := func(dest, src string) {
		for _, ms := range [][]ckpt.SpecMount{sm, cm} {
			for i := range ms {
				if ms[i].Destination == dest {
					ms[i].SetSource(src)
				}
			}
		}
	}

	// Named volumes: podman 4.3.1 keeps spec.dump's source, which lies in
	// the source host's volume directory; point it at this host's.
	volumeAt := map[string]string{}
	known := map[string]bool{}
	for _, v := range cfg.NamedVolumeMounts() {
		known[v.Name] = true
		volumeAt[v.Destination] = v.Name
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
			return fmt.Errorf("%w: --volume-map %s: the checkpoint has no volume %q (it has %s)", mountmap.ErrBadMap, old, old, listOrNone(keys(known)))
		}
	}
	if len(volMap) > 0 {
		if err := renameVolumes(cfg, volMap); err != nil {
			return err
		}
		p.checkVolumeMembers(meta, volMap)
	}

	// Bind mounts the user gave the container, as they are now: a
	// relocation applies to every mount at its destination. push records
	// whether each source was a file or a directory (podman's images do
	// not, and then only existence is checked).
	kinds := meta.Provenance().BindKinds
	used := map[string]bool{}
	for i := range sm {
		if !sm[i].UserBind(volumeAt) {
			continue
		}
		dest, src := sm[i].Destination, sm[i].Source
		nw, _ := mountMaps.Apply(src, used)
		mp := MountPlan{Destination: dest, Old: src, New: nw, ReadOnly: sm[i].ReadOnly()}
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
			// CRIU needs the kind of source the checkpoint had.
			if want, known := kinds.Dir(dest); known && want != fi.IsDir() {
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

	if err := spec.SetMounts(sm); err != nil {
		return err
	}
	if cspec != nil && cm != nil {
		if err := cspec.SetMounts(cm); err != nil {
			return err
		}
		b, err := cspec.Bytes()
		if err != nil {
			return err
		}
		cfg.SetRaw("spec", b)
	}
	cb, err := cfg.Bytes()
	if err != nil {
		return err
	}
	sb, err := spec.Bytes()
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
	if meta.Provenance().Format == "" {
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
	status, _ := ckpt.ParseNetStatus(meta.NetworkStatus) // nil: none recorded
	names := map[string]bool{}
	for n := range nets {
		names[n] = true
	}
	for _, n := range status.Names() {
		names[n] = true
	}
	for old := range netMap {
		if !names[old] {
			return nil, fmt.Errorf("%w: --network-map %s: the container was not on network %q (it was on %s)", mountmap.ErrBadMap, old, old, listOrNone(keys(names)))
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
		ips, mac := statusAddrs(status, old)
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
			status.Rename(old, nw)
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
	return status.Bytes()
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
