//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// onB runs a shell command in host B's mount namespace, where B's own
// /var/tmp (and so paths that exist on B only) live.
func onB(t *testing.T, script string) string {
	t.Helper()
	r := runCmd(t, "nsenter", "-t", hosts.HostBPID, "-m", "--", "sh", "-c", script)
	if r.code != 0 {
		t.Fatalf("on B: %s: exit %d: %s", script, r.code, r.stderr)
	}
	return strings.TrimSpace(r.stdout)
}

// dryRun runs pull --dry-run; its plan is the result on stdout even when
// the answer is no, so the failure contract does not apply.
func dryRun(t *testing.T, args ...string) result {
	t.Helper()
	r := runCmd(t, bin, append([]string{"--url", hosts.HostBURL, "pull", "--dry-run", "--tls-verify=false"}, args...)...)
	t.Logf("pull --dry-run %s -> exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

func volumesOn(t *testing.T, url string) string {
	t.Helper()
	return podman(t, url, "volume", "ls", "--format", "{{.Name}}")
}

// TestRelocateClassic: a container writing into a directory bind mount,
// with a read-only file bind mount and a named volume, moves to a host
// whose data lives elsewhere.
func TestRelocateClassic(t *testing.T) {
	src, dst, vol := "e2e-reloc-src", "e2e-reloc-dst", "e2e-reloc-vol"
	// Under /var/tmp: host B has its own, so these paths exist on A only.
	dirA, err := os.MkdirTemp("/var/tmp", "pm-e2e-reloc-a-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dirA) })
	dataA, confA := filepath.Join(dirA, "data"), filepath.Join(dirA, "app.conf")
	if err := os.Mkdir(dataA, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(confA, []byte("conf-on-a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { podmanTry(t, hosts.HostAURL, "volume", "rm", "-f", vol) })
	podman(t, hosts.HostAURL, "run", "-d", "--name", src, "-v", dataA+":/data", "-v", confA+":/etc/app.conf:ro",
		"-v", vol+":/vol", hosts.TestImage, "/bin/workload", "-mem", "32", "-sum-every", "5", "-dir", "/data")
	t.Cleanup(func() { podmanTry(t, hosts.HostAURL, "rm", "-f", src) })
	podman(t, hosts.HostAURL, "exec", src, "sh", "-c", "echo in-the-volume > /vol/hello")
	before := waitStatusAt(t, hosts.HostAURL, src, "/data", func(s status) bool { return s.Counter >= 5 })

	ref := hosts.Registry + "/e2e/reloc:v1"
	if r := migrate(t, "--url", hosts.HostAURL, "push", "--tls-verify=false", src, ref); r.code != 0 {
		t.Fatalf("push failed: %s", r.stderr)
	}
	// The data moves to other paths on B.
	dirB := onB(t, "mktemp -d /var/tmp/pm-e2e-reloc-b-XXXXXX")
	dataB, confB := dirB+"/newdata", dirB+"/new.conf"
	onB(t, "mkdir "+dataB+" && echo conf-on-b > "+confB)
	t.Cleanup(func() { runCmd(t, "nsenter", "-t", hosts.HostBPID, "-m", "--", "rm", "-rf", dirB) })
	rmB(t, dst)
	t.Cleanup(func() { podmanTry(t, hosts.HostBURL, "volume", "rm", "-f", vol) })

	t.Run("refused without mappings", func(t *testing.T) {
		unchanged := unchangedOnB(t)
		vols := volumesOn(t, hosts.HostBURL)
		r := migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--name", dst, ref)
		if r.code != 5 || !strings.Contains(r.stderr, dataA) || !strings.Contains(r.stderr, confA) || !strings.Contains(r.stderr, "--mount-map") {
			t.Fatalf("exit %d, stderr %q; want 5 naming %s and %s and --mount-map", r.code, r.stderr, dataA, confA)
		}
		if strings.Contains(r.stderr, "Fetching") {
			t.Error("the CRIU images were fetched although the plan had blockers")
		}
		unchanged()
		if got := volumesOn(t, hosts.HostBURL); got != vols {
			t.Fatalf("volumes on B changed: %q -> %q", vols, got)
		}
		d := dryRun(t, "--name", dst, ref)
		if d.code != 5 || strings.Count(d.stdout, "Blocker:") != 2 || !strings.Contains(d.stdout, "missing") {
			t.Fatalf("dry run: exit %d, want 5 with two blockers", d.code)
		}
	})

	maps := []string{"--mount-map", dataA + "=" + dataB, "--mount-map", confA + "=" + confB}
	t.Run("dry run with mappings", func(t *testing.T) {
		d := dryRun(t, append(append([]string{"--name", dst}, maps...), ref)...)
		for _, want := range []string{dataA + " -> " + dataB, confA + " -> " + confB, "(file, ro): ok", "(dir): ok", "Volume:      " + vol, "The restore can proceed."} {
			if !strings.Contains(d.stdout, want) {
				t.Errorf("plan lacks %q", want)
			}
		}
		if d.code != 0 {
			t.Fatalf("dry run: exit %d, want 0", d.code)
		}
		if hasContainer(t, hosts.HostBURL, dst) {
			t.Fatal("--dry-run created the container")
		}
	})

	t.Run("restored with mappings", func(t *testing.T) {
		r := migrate(t, append(append([]string{"--url", hosts.HostBURL, "pull", "--tls-verify=false", "--name", dst}, maps...), ref)...)
		if r.code != 0 {
			t.Fatalf("pull failed: %s", r.stderr)
		}
		after := waitStatusAt(t, hosts.HostBURL, dst, "/data", func(s status) bool { return s.SumAt > before.Counter })
		if after.Boot != before.Boot || after.Counter <= before.Counter || after.Sum != before.InitialSum {
			t.Fatalf("process did not continue: before %+v, after %+v", before, after)
		}
		// New writes land under the new path on B.
		var onDisk status
		if err := json.Unmarshal([]byte(onB(t, "cat "+dataB+"/status")), &onDisk); err != nil || onDisk.Counter <= before.Counter {
			t.Fatalf("status under %s on B: %+v (%v)", dataB, onDisk, err)
		}
		if got := podman(t, hosts.HostBURL, "exec", dst, "cat", "/etc/app.conf"); got != "conf-on-b" {
			t.Fatalf("/etc/app.conf is %q, want B's file", got)
		}
		if got := podman(t, hosts.HostBURL, "exec", dst, "cat", "/vol/hello"); got != "in-the-volume" {
			t.Fatalf("volume content %q", got)
		}
	})
}

func waitStatusAt(t *testing.T, url, ctr, dir string, ok func(status) bool) status {
	t.Helper()
	var st status
	for i := 0; i < 450; i++ {
		r := podmanTry(t, url, "exec", ctr, "cat", dir+"/status")
		if r.code == 0 && json.Unmarshal([]byte(r.stdout), &st) == nil && ok(st) {
			return st
		}
		sleepTick()
	}
	t.Fatalf("container %s never reached the expected state; last %+v", ctr, st)
	return st
}

// TestVolumeMap: a volume name taken on B is refused, and restored under
// another name with --volume-map.
func TestVolumeMap(t *testing.T) {
	src, dst, vol, other := "e2e-vmap-src", "e2e-vmap-dst", "e2e-vmap-vol", "e2e-vmap-new"
	t.Cleanup(func() { podmanTry(t, hosts.HostAURL, "volume", "rm", "-f", vol) })
	before := startWorkload(t, src, "-v", vol+":/data")
	podman(t, hosts.HostAURL, "exec", src, "sh", "-c", "echo mapped > /data/hello")
	ref := hosts.Registry + "/e2e/vmap:v1"
	if r := migrate(t, "--url", hosts.HostAURL, "push", "--tls-verify=false", src, ref); r.code != 0 {
		t.Fatalf("push failed: %s", r.stderr)
	}
	podman(t, hosts.HostBURL, "volume", "create", vol) // taken on B
	t.Cleanup(func() { podmanTry(t, hosts.HostBURL, "volume", "rm", "-f", vol) })
	t.Cleanup(func() { podmanTry(t, hosts.HostBURL, "volume", "rm", "-f", other) })
	rmB(t, dst)

	r := migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--name", dst, ref)
	if r.code != 5 || !strings.Contains(r.stderr, "--volume-map "+vol+"=") {
		t.Fatalf("exit %d, stderr %q; want 5 suggesting --volume-map", r.code, r.stderr)
	}
	r = migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--name", dst, "--volume-map", vol+"="+vol, ref)
	if r.code != 5 || !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("mapping onto a taken name: exit %d, stderr %q; want 5", r.code, r.stderr)
	}
	r = migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--name", dst, "--volume-map", "nosuch="+other, ref)
	if r.code != 5 || !strings.Contains(r.stderr, "has no volume") {
		t.Fatalf("mapping an unknown volume: exit %d, stderr %q; want 5", r.code, r.stderr)
	}
	r = migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--name", dst, "--volume-map", vol+"="+other, ref)
	if r.code != 0 {
		t.Fatalf("pull failed: %s", r.stderr)
	}
	checkContinued(t, hosts.HostBURL, dst, before)
	if got := podman(t, hosts.HostBURL, "exec", dst, "cat", "/data/hello"); got != "mapped" {
		t.Fatalf("volume content %q", got)
	}
	if got := podman(t, hosts.HostBURL, "inspect", "--format", "{{range .Mounts}}{{.Name}} {{end}}", dst); !strings.Contains(got, other) {
		t.Fatalf("container mounts %q, want volume %s", got, other)
	}
	if got := podman(t, hosts.HostBURL, "volume", "inspect", "--format", "{{.Mountpoint}}", other); !strings.HasPrefix(got, "/var/lib/containers/storage-hostb/") {
		t.Fatalf("volume %s at %s, want under B's own graph root", other, got)
	}
}

// TestIncludeBase: a base image that exists on A only travels with the
// checkpoint when asked, and is refused clearly when not.
func TestIncludeBase(t *testing.T) {
	base, src := "localhost/pm-e2e-onlya:v1", "e2e-incbase-src"
	podman(t, hosts.HostAURL, "create", "--name", "e2e-incbase-tmp", hosts.TestImage)
	podman(t, hosts.HostAURL, "commit", "-q", "e2e-incbase-tmp", base)
	podman(t, hosts.HostAURL, "rm", "e2e-incbase-tmp")
	t.Cleanup(func() { podmanTry(t, hosts.HostAURL, "rmi", "-f", base) })
	t.Cleanup(func() { podmanTry(t, hosts.HostBURL, "rmi", "-f", base) })
	podman(t, hosts.HostAURL, "run", "-d", "--name", src, base, "/bin/workload", "-sum-every", "5")
	t.Cleanup(func() { podmanTry(t, hosts.HostAURL, "rm", "-f", src) })
	before := waitStatus(t, hosts.HostAURL, src, func(s status) bool { return s.Counter >= 5 })

	without := hosts.Registry + "/e2e/incbase:without"
	if r := migrate(t, "--url", hosts.HostAURL, "push", "--leave-running", "--tls-verify=false", src, without); r.code != 0 {
		t.Fatalf("push failed: %s", r.stderr)
	}
	unchanged := unchangedOnB(t)
	r := migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--name", "e2e-incbase-no", without)
	if r.code != 5 || !strings.Contains(r.stderr, base) || !strings.Contains(r.stderr, "--include-base") {
		t.Fatalf("exit %d, stderr %q; want 5 naming %s and --include-base", r.code, r.stderr, base)
	}
	unchanged()

	with := hosts.Registry + "/e2e/incbase:with"
	r = migrate(t, "--url", hosts.HostAURL, "push", "--include-base", "--tls-verify=false", src, with)
	if r.code != 0 {
		t.Fatalf("push --include-base failed: %s", r.stderr)
	}
	m := inspectRaw(t, with)
	inc := m.Annotations["io.podman-migrate.base.included"]
	if !strings.HasPrefix(inc, hosts.Registry+"/e2e/incbase@sha256:") {
		t.Fatalf("base.included annotation %q", inc)
	}
	dst := "e2e-incbase-dst"
	rmB(t, dst)
	d := dryRun(t, "--name", dst, strings.TrimSpace(r.stdout))
	if d.code != 0 || !strings.Contains(d.stdout, "will be pulled from "+inc) {
		t.Fatalf("dry run: exit %d; want a plan pulling the base from %s", d.code, inc)
	}
	r = migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--name", dst, strings.TrimSpace(r.stdout))
	if r.code != 0 {
		t.Fatalf("pull failed: %s", r.stderr)
	}
	checkContinued(t, hosts.HostBURL, dst, before)
	idA := podman(t, hosts.HostAURL, "image", "inspect", "--format", "{{.Id}}", base)
	if idB := podman(t, hosts.HostBURL, "image", "inspect", "--format", "{{.Id}}", base); idB != idA {
		t.Fatalf("base image on B is %s, on A %s", idB, idA)
	}
}

// TestNetworkMap: a container on a user-defined network lands on B's
// network of another name and subnet; its old address is dropped.
func TestNetworkMap(t *testing.T) {
	src, dst, netA, netB := "e2e-net-src", "e2e-net-dst", "e2e-neta", "e2e-netb"
	// Both hosts share one network namespace here: give the bridges
	// distinct names.
	createNetwork(t, hosts.HostAURL, netA, "pme2ea0", "10.89.10.0/24")
	createNetwork(t, hosts.HostBURL, netB, "pme2eb0", "10.89.20.0/24")
	before := startWorkload(t, src, "--network", netA, "--ip", "10.89.10.50")
	ref := hosts.Registry + "/e2e/netmap:v1"
	if r := migrate(t, "--url", hosts.HostAURL, "push", "--tls-verify=false", src, ref); r.code != 0 {
		t.Fatalf("push failed: %s", r.stderr)
	}
	podman(t, hosts.HostAURL, "rm", "-f", src)
	rmB(t, src)

	unchanged := unchangedOnB(t)
	r := migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", ref)
	if r.code != 5 || !strings.Contains(r.stderr, netA) || !strings.Contains(r.stderr, "--network-map") {
		t.Fatalf("exit %d, stderr %q; want 5 naming %s and --network-map", r.code, r.stderr, netA)
	}
	unchanged()
	d := dryRun(t, "--network-map", netA+"="+netB, ref)
	if d.code != 0 || !strings.Contains(d.stdout, netA+" -> "+netB) || !strings.Contains(d.stdout, "outside "+netB) {
		t.Fatalf("dry run: exit %d; want a plan moving %s to %s and dropping the address", d.code, netA, netB)
	}
	r = migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--network-map", netA+"="+netB, ref)
	if r.code != 0 {
		t.Fatalf("pull failed: %s", r.stderr)
	}
	checkContinued(t, hosts.HostBURL, src, before)
	nets := podman(t, hosts.HostBURL, "inspect", "--format", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}} {{end}}", src)
	if !strings.Contains(nets, netB+"=10.89.20.") || strings.Contains(nets, netA) {
		t.Fatalf("networks on B: %q, want %s with an address in 10.89.20.0/24", nets, netB)
	}
	// Under a new name podman asks for the creation-time static IP
	// instead (measured): it must go as well.
	rmB(t, dst)
	r = migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--name", dst, "--network-map", netA+"="+netB, ref)
	if r.code != 0 {
		t.Fatalf("pull under a new name failed: %s", r.stderr)
	}
	checkContinued(t, hosts.HostBURL, dst, before)
	if nets := podman(t, hosts.HostBURL, "inspect", "--format", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}} {{end}}", dst); !strings.Contains(nets, netB+"=10.89.20.") {
		t.Fatalf("networks of %s on B: %q", dst, nets)
	}
}

// createNetwork creates a bridge network with a chosen bridge name through
// the REST API (podman 4.3.1's CLI has no --interface-name).
func createNetwork(t *testing.T, url, name, iface, subnet string) {
	t.Helper()
	body := fmt.Sprintf(`{"name":%q,"driver":"bridge","network_interface":%q,"subnets":[{"subnet":%q}],"ipam_options":{"driver":"host-local"}}`, name, iface, subnet)
	r := runCmd(t, "curl", "-sf", "--unix-socket", strings.TrimPrefix(url, "unix://"), "-H", "Content-Type: application/json",
		"-d", body, "http://d/v4.0.0/libpod/networks/create")
	if r.code != 0 {
		t.Fatalf("creating network %s: exit %d: %s %s", name, r.code, r.stdout, r.stderr)
	}
	t.Cleanup(func() { podmanTry(t, url, "network", "rm", "-f", name) })
}

// TestInspect: text and JSON, on our image and on podman's own.
func TestInspect(t *testing.T) {
	src, vol := "e2e-inspect-src", "e2e-inspect-vol"
	t.Cleanup(func() { podmanTry(t, hosts.HostAURL, "volume", "rm", "-f", vol) })
	ours := hosts.Registry + "/e2e/inspect:ours"
	pushCopy(t, src, ours, "-v", vol+":/data", "-v", hosts.HostAData+":/host:ro", "-p", "127.0.0.1:18123:8080")
	var d struct {
		Format    string `json:"format"`
		Container struct {
			Name    string   `json:"name"`
			Command []string `json:"command"`
		} `json:"container"`
		Base   struct{ Name, ID string }                      `json:"baseImage"`
		Source struct{ Kernel, Arch, Podman, Runtime string } `json:"sourceHost"`
		Layers []struct {
			Role string `json:"role"`
			Size int64  `json:"size"`
		} `json:"layers"`
		Binds []struct {
			Source, Destination string
			ReadOnly            bool `json:"readOnly"`
		} `json:"bindMounts"`
		Volumes  []struct{ Name, Destination string } `json:"volumes"`
		Networks []struct {
			Name string   `json:"name"`
			IPs  []string `json:"ips"`
		} `json:"networks"`
		Ports []struct {
			HostPort      int `json:"hostPort"`
			ContainerPort int `json:"containerPort"`
		} `json:"ports"`
		Options struct {
			Recorded       bool `json:"recorded"`
			TCPEstablished bool `json:"tcpEstablished"`
		} `json:"checkpointOptions"`
	}
	r := migrate(t, "inspect", "--tls-verify=false", "--format", "json", ours)
	if r.code != 0 {
		t.Fatalf("inspect failed: %s", r.stderr)
	}
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil {
		t.Fatal(err)
	}
	var roles []string
	for _, l := range d.Layers {
		roles = append(roles, l.Role)
		if l.Size <= 0 {
			t.Errorf("layer %s has size %d", l.Role, l.Size)
		}
	}
	switch {
	case d.Format != "podman-migrate" || d.Container.Name != src || len(d.Container.Command) == 0 || d.Container.Command[0] != "/bin/workload":
		t.Errorf("container facts: %+v", d)
	case d.Base.Name != hosts.TestImage || d.Source.Runtime != "runc" || d.Source.Arch == "" || d.Source.Kernel == "" || d.Source.Podman == "":
		t.Errorf("base/source facts: %+v %+v", d.Base, d.Source)
	case strings.Join(roles, ",") != "metadata,criu,rootfs,volume":
		t.Errorf("layer roles %v", roles)
	case len(d.Binds) != 1 || d.Binds[0].Source != hosts.HostAData || d.Binds[0].Destination != "/host" || !d.Binds[0].ReadOnly:
		t.Errorf("bind mounts %+v", d.Binds)
	case len(d.Volumes) != 1 || d.Volumes[0].Name != vol || d.Volumes[0].Destination != "/data":
		t.Errorf("volumes %+v", d.Volumes)
	case len(d.Networks) != 1 || d.Networks[0].Name != "podman" || len(d.Networks[0].IPs) != 1:
		t.Errorf("networks %+v", d.Networks)
	case len(d.Ports) != 1 || d.Ports[0].HostPort != 18123 || d.Ports[0].ContainerPort != 8080:
		t.Errorf("ports %+v", d.Ports)
	case !d.Options.Recorded || d.Options.TCPEstablished:
		t.Errorf("options %+v", d.Options)
	}
	r = migrate(t, "inspect", "--tls-verify=false", ours)
	for _, want := range []string{"Container:   " + src, "Layer 1:     criu", "Volume:      " + vol + " -> /data", "Bind mount:  " + hosts.HostAData + " -> /host (ro)", "tcp-established=false"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("text inspect lacks %q", want)
		}
	}

	// podman's own --create-image image.
	theirs := hosts.Registry + "/e2e/inspect:podman"
	psrc := "e2e-inspect-podman"
	startWorkload(t, psrc)
	podman(t, hosts.HostAURL, "container", "checkpoint", "--leave-running", "--create-image", theirs, psrc)
	t.Cleanup(func() { podmanTry(t, hosts.HostAURL, "rmi", "-f", theirs) })
	podman(t, hosts.HostAURL, "push", "--tls-verify=false", theirs)
	r = migrate(t, "inspect", "--tls-verify=false", "--format", "json", theirs)
	if r.code != 0 {
		t.Fatalf("inspect of podman's image failed: %s", r.stderr)
	}
	d.Options.Recorded = true
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil {
		t.Fatal(err)
	}
	if d.Format != "podman" || d.Container.Name != psrc || d.Base.Name != hosts.TestImage || d.Options.Recorded || len(d.Layers) == 0 {
		t.Errorf("podman image facts: %+v", d)
	}
	if r := migrate(t, "inspect", "--tls-verify=false", theirs); r.code != 0 || !strings.Contains(r.stdout, "Format:      podman checkpoint image") {
		t.Errorf("text inspect of podman's image: %q", r.stdout)
	}
}
