//go:build e2e

package e2e

import (
	"context"
	"io"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	podmanapi "github.com/podman-migrate/podman-migrate/bindings"
)

// TestPodGroundwork is what moving a pod stands on, on real podman 4.3.1:
// a pod made from a spec keeps its settings (as pull will make it from a
// pod's record), and the members of a running pod, all frozen before the
// first is dumped, checkpoint with export one after another and restore
// from their kept checkpoints, their processes continuing.
func TestPodGroundwork(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := podmanapi.ConnectTo(ctx, podmanapi.Destination{URI: hosts.HostAURL})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()

	const name = "e2e-pod-ground"
	id, err := c.CreatePod(ctx, podmanapi.PodSpec{
		Name: name, Hostname: "groundwork", Labels: map[string]string{"app": "e2e"},
		SharedNamespaces: []string{"ipc", "net", "uts"},
		PortMappings:     []podmanapi.PortMapping{{ContainerPort: 8080, HostPort: port, Protocol: "tcp"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer ccancel()
		if err := c.RemovePod(cctx, id); err != nil {
			t.Errorf("removing the pod: %v", err)
		}
	})
	if err := c.StartPod(ctx, id); err != nil {
		t.Fatal(err)
	}
	pod, err := c.InspectPod(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(pod.SharedNamespaces) // podman lists them in its own order
	if pod.ID != id || pod.Hostname != "groundwork" || pod.Labels["app"] != "e2e" || pod.InfraContainerID == "" ||
		!slices.Equal(pod.SharedNamespaces, []string{"ipc", "net", "uts"}) || pod.InfraConfig == nil ||
		len(pod.InfraConfig.PortBindings["8080/tcp"]) != 1 || pod.InfraConfig.PortBindings["8080/tcp"][0].HostPort != strconv.Itoa(int(port)) {
		t.Fatalf("pod as inspected: %+v (infra %+v)", pod, pod.InfraConfig)
	}

	members := []string{"e2e-pod-ground-a", "e2e-pod-ground-b"}
	before := map[string]status{}
	var ctrs []*podmanapi.Container
	for _, m := range members {
		before[m] = startWorkloadOn(t, hosts.HostAURL, m, 16, "--pod", name)
		ctr, err := c.InspectContainer(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		if ctr.Pod != id || ctr.State.CgroupPath == "" {
			t.Fatalf("member %s: pod %q, cgroup %q", m, ctr.Pod, ctr.State.CgroupPath)
		}
		ctrs = append(ctrs, ctr)
	}
	// Cleanups run last first: thaw before the members are removed, as a
	// frozen member (cgroup v1) ignores SIGKILL.
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		for _, ctr := range ctrs {
			if err := c.FreezeContainer(cctx, ctr, false); err != nil {
				t.Errorf("thawing %s: %v", ctr.Name, err)
			}
		}
	})
	for _, ctr := range ctrs {
		if err := c.FreezeContainer(ctx, ctr, true); err != nil {
			t.Fatal(err)
		}
	}
	for _, ctr := range ctrs {
		archive, err := c.Checkpoint(ctx, ctr.ID, podmanapi.CheckpointOptions{})
		if err != nil {
			t.Fatalf("checkpointing frozen member %s: %v", ctr.Name, err)
		}
		n, err := io.Copy(io.Discard, archive)
		archive.Close()
		if err != nil || n == 0 {
			t.Fatalf("member %s's export: %d bytes, %v", ctr.Name, n, err)
		}
		if err := c.FreezeContainer(ctx, ctr, false); err != nil {
			t.Fatalf("thawing member %s after its dump: %v", ctr.Name, err)
		}
	}
	for _, ctr := range ctrs {
		now, err := c.InspectContainer(ctx, ctr.ID)
		if err != nil || now.State.Running {
			t.Fatalf("member %s after its checkpoint: running %t, %v", ctr.Name, now != nil && now.State.Running, err)
		}
	}
	for _, ctr := range ctrs {
		if err := c.RestoreKept(ctx, ctr.ID, podmanapi.CheckpointOptions{}); err != nil {
			t.Fatalf("restoring member %s: %v", ctr.Name, err)
		}
	}
	for _, m := range members {
		checkContinued(t, hosts.HostAURL, m, before[m])
	}
}
