package ckpt

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
	"github.com/podman-migrate/podman-migrate/internal/tarsafe"
)

func samplePod() (*Pod, []imgspecv1.Descriptor) {
	pod := &Pod{
		Name: "web", ID: strings.Repeat("a", 64), Hostname: "web", Labels: map[string]string{"app": "shop"},
		Shared: []string{"ipc", "net", "uts"}, InfraID: strings.Repeat("b", 64),
		Ports:    []PodPort{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}},
		Networks: []string{"podman"},
	}
	var ms []imgspecv1.Descriptor
	for _, n := range []string{"server", "reader"} {
		d := digest.FromString(n)
		pod.Members = append(pod.Members, PodMember{Name: n, ID: n + "-id", Digest: d})
		ms = append(ms, imgspecv1.Descriptor{Digest: d, Size: 123})
	}
	return pod, ms
}

// sampleGroup is two containers that no pod holds: reader joins server's
// network namespace.
func sampleGroup() (*Pod, []imgspecv1.Descriptor) {
	pod, ms := samplePod()
	g := &Pod{Name: "server", Group: true, ID: pod.Members[0].ID, Members: pod.Members}
	g.Members[1].Joins = map[string]string{"net": "server"}
	return g, ms
}

func TestPodIndexRoundTrip(t *testing.T) {
	for _, sample := range []func() (*Pod, []imgspecv1.Descriptor){samplePod, sampleGroup} {
		pod, ms := sample()
		roundTrip(t, pod, ms)
	}
}

func roundTrip(t *testing.T, pod *Pod, ms []imgspecv1.Descriptor) {
	t.Helper()
	b, err := PodIndex(pod, ms)
	if err != nil {
		t.Fatal(err)
	}
	if !IsPodIndex(imgspecv1.MediaTypeImageIndex, b) || IsPodIndex(imgspecv1.MediaTypeImageManifest, b) {
		t.Fatal("IsPodIndex does not tell the pod's index")
	}
	got, err := ReadPodIndex(b)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(pod)
	have, _ := json.Marshal(got)
	if string(want) != string(have) {
		t.Fatalf("read back\n%s\nwant\n%s", have, want)
	}
	var ix imgspecv1.Index
	if err := json.Unmarshal(b, &ix); err != nil {
		t.Fatal(err)
	}
	if ix.MediaType != imgspecv1.MediaTypeImageIndex || ix.Manifests[1].Annotations[AnnPodMember] != "reader" ||
		ix.Manifests[0].MediaType != imgspecv1.MediaTypeImageManifest || ix.Manifests[0].Size != 123 {
		t.Fatalf("index %s", b)
	}
}

// TestPodIndexRefusesHostile: a pulled index is checked before anything
// acts on it.
func TestPodIndexRefusesHostile(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(ix map[string]any, rec map[string]any)
		is    error
		group bool
	}{
		{"member listed twice", func(ix, rec map[string]any) {
			m := rec["members"].([]any)
			rec["members"] = []any{m[0], m[0]}
			ms := ix["manifests"].([]any)
			ix["manifests"] = []any{ms[0], ms[0]}
		}, tarsafe.ErrUnsafe, false},
		{"member not in the index", func(ix, rec map[string]any) {
			rec["members"].([]any)[1].(map[string]any)["digest"] = digest.FromString("other").String()
		}, tarsafe.ErrUnsafe, false},
		{"index has a manifest more", func(ix, rec map[string]any) {
			ms := ix["manifests"].([]any)
			ix["manifests"] = append(ms, ms[0])
		}, tarsafe.ErrUnsafe, false},
		{"member's manifest is an index", func(ix, rec map[string]any) {
			ix["manifests"].([]any)[0].(map[string]any)["mediaType"] = imgspecv1.MediaTypeImageIndex
		}, tarsafe.ErrUnsafe, false},
		{"member annotation names another", func(ix, rec map[string]any) {
			ix["manifests"].([]any)[0].(map[string]any)["annotations"] = map[string]any{AnnPodMember: "reader"}
		}, tarsafe.ErrUnsafe, false},
		{"namespace podman does not share", func(ix, rec map[string]any) { rec["sharedNamespaces"] = []any{"net", "mnt"} }, tarsafe.ErrUnsafe, false},
		{"pod name with a slash", func(ix, rec map[string]any) { rec["name"] = "../web" }, tarsafe.ErrUnsafe, false},
		{"member name with a slash", func(ix, rec map[string]any) {
			rec["members"].([]any)[0].(map[string]any)["name"] = "a/b"
		}, tarsafe.ErrUnsafe, false},
		{"no members", func(ix, rec map[string]any) { rec["members"] = []any{}; ix["manifests"] = []any{} }, tarsafe.ErrUnsafe, false},
		{"port 0", func(ix, rec map[string]any) {
			rec["ports"] = []any{map[string]any{"hostPort": 1, "containerPort": 0, "protocol": "tcp"}}
		}, tarsafe.ErrUnsafe, false},
		{"unknown protocol", func(ix, rec map[string]any) {
			rec["ports"] = []any{map[string]any{"hostPort": 1, "containerPort": 2, "protocol": "icmp"}}
		}, tarsafe.ErrUnsafe, false},
		{"unknown field", func(ix, rec map[string]any) { rec["privileged"] = true }, ErrNotCheckpoint, false},
		{"no record", func(ix, rec map[string]any) { delete(ix, "annotations") }, ErrNotCheckpoint, false},
		{"pod member joins another", func(ix, rec map[string]any) {
			rec["members"].([]any)[1].(map[string]any)["joins"] = map[string]any{"net": "server"}
		}, tarsafe.ErrUnsafe, false},
		{"group member joins a later one", func(ix, rec map[string]any) {
			m := rec["members"].([]any)
			m[0].(map[string]any)["joins"] = map[string]any{"net": "reader"}
			delete(m[1].(map[string]any), "joins")
		}, tarsafe.ErrUnsafe, true},
		{"group member joins itself", func(ix, rec map[string]any) {
			rec["members"].([]any)[1].(map[string]any)["joins"] = map[string]any{"net": "reader"}
		}, tarsafe.ErrUnsafe, true},
		{"group member joins no member", func(ix, rec map[string]any) {
			rec["members"].([]any)[1].(map[string]any)["joins"] = map[string]any{"net": "db"}
		}, tarsafe.ErrUnsafe, true},
		{"group member joins a user namespace", func(ix, rec map[string]any) {
			rec["members"].([]any)[1].(map[string]any)["joins"] = map[string]any{"user": "server"}
		}, tarsafe.ErrUnsafe, true},
		{"group with published ports", func(ix, rec map[string]any) {
			rec["ports"] = []any{map[string]any{"hostPort": 1, "containerPort": 2, "protocol": "tcp"}}
		}, tarsafe.ErrUnsafe, true},
		{"group with shared namespaces", func(ix, rec map[string]any) { rec["sharedNamespaces"] = []any{"net"} }, tarsafe.ErrUnsafe, true},
		{"group with an infra container", func(ix, rec map[string]any) { rec["infraName"] = "x-infra" }, tarsafe.ErrUnsafe, true},
		{"group named after no first member", func(ix, rec map[string]any) { rec["name"] = "reader" }, tarsafe.ErrUnsafe, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod, ms := samplePod()
			if tc.group {
				pod, ms = sampleGroup()
			}
			b, err := PodIndex(pod, ms)
			if err != nil {
				t.Fatal(err)
			}
			var ix, rec map[string]any
			if err := json.Unmarshal(b, &ix); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(pod.record(t)), &rec); err != nil {
				t.Fatal(err)
			}
			tc.edit(ix, rec)
			if a, ok := ix["annotations"].(map[string]any); ok {
				r, _ := json.Marshal(rec)
				a[AnnPod] = string(r)
			}
			b, _ = json.Marshal(ix)
			_, err = ReadPodIndex(b)
			if !errors.Is(err, tc.is) {
				t.Fatalf("ReadPodIndex: %v, want %v", err, tc.is)
			}
		})
	}
}

func (p *Pod) record(t *testing.T) string {
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPodOutside(t *testing.T) {
	pod, _ := samplePod()
	if o := pod.Outside([]string{pod.InfraID, ""}); o != "" {
		t.Fatalf("the infra container counted as outside: %q", o)
	}
	if o := pod.Outside([]string{pod.InfraID, "c0ffee"}); o != "c0ffee" {
		t.Fatalf("Outside = %q, want c0ffee", o)
	}
}

// TestReadMetadataOfAnIndex: an index is told apart from a checkpoint; a
// list that is no pod's (a multi-architecture image) is no checkpoint.
func TestReadMetadataOfAnIndex(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	img := ckpttest.WriteImage(t, dir, nil, nil)
	src, err := img.NewImageSource(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := src.GetManifest(ctx, nil)
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	desc := imgspecv1.Descriptor{MediaType: imgspecv1.MediaTypeImageManifest, Digest: digest.FromBytes(m), Size: int64(len(m)),
		Platform: &imgspecv1.Platform{OS: "linux", Architecture: "arm64"}}
	plain, _ := json.Marshal(imgspecv1.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: imgspecv1.MediaTypeImageIndex, Manifests: []imgspecv1.Descriptor{desc}})
	pod, _ := samplePod()
	pod.Members = pod.Members[:1]
	pod.Members[0].Digest = desc.Digest
	podIx, err := PodIndex(pod, []imgspecv1.Descriptor{desc})
	if err != nil {
		t.Fatal(err)
	}
	for tag, wantPod := range map[string]bool{"plain": false, "pod": true} {
		ix := plain
		if wantPod {
			ix = podIx
		}
		ref := ckpttest.WriteManifest(t, dir, tag, ix)
		src, err := ref.NewImageSource(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ReadMetadata(ctx, src, Limits{})
		src.Close()
		var ie *IndexError
		if !errors.As(err, &ie) || !errors.Is(err, ErrNotCheckpoint) || IsPodIndex(ie.MediaType, ie.Manifest) != wantPod {
			t.Fatalf("%s index: %v", tag, err)
		}
		if !wantPod && !strings.Contains(err.Error(), "list of images") {
			t.Fatalf("a plain index's error %q does not say what it is", err)
		}
	}
}
