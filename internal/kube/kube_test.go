package kube

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
	"testing"

	"github.com/containers/image/v5/docker/reference"
	v1 "github.com/containers/podman/v4/pkg/k8s.io/api/core/v1"
	"github.com/opencontainers/go-digest"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
	"github.com/podman-migrate/podman-migrate/internal/dump"
	"github.com/podman-migrate/podman-migrate/internal/fault"
	"github.com/podman-migrate/podman-migrate/internal/mountmap"
)

const (
	ckptImage = "registry.example:5000/ckpt/fixture@sha256:3f1c000000000000000000000000000000000000000000000000000000000000"
	baseCopy  = "registry.example:5000/ckpt/fixture@sha256:ee85000000000000000000000000000000000000000000000000000000000000"
)

// fixture is the metadata of the podman 4.3.1 fixture (bind /srv:/srv2,
// volume fixvol at /data) as push writes it by default; edit changes the
// parsed spec.dump first.
func fixture(t *testing.T, ann map[string]string, edit func(spec map[string]any)) *ckpt.Metadata {
	t.Helper()
	m := ckpttest.Members(t, ckpttest.Tar(t, ckpttest.Archive(t)))
	var spec map[string]any
	if err := json.Unmarshal(m[ckpt.SpecDump], &spec); err != nil {
		t.Fatal(err)
	}
	spec["annotations"].(map[string]any)[ckpt.SpecAnnCRIOAnnotations] = "{}"
	if edit != nil {
		edit(spec)
	}
	specDump, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := dump.ReadConfig(bytes.NewReader(m[ckpt.ConfigDump]))
	if err != nil {
		t.Fatal(err)
	}
	cfg.SetRaw("rootfsImageRef", json.RawMessage(`"`+cfg.RootfsImageID()+`"`))
	cfg.SetRaw("newPortMappings", json.RawMessage(`[{"host_ip":"","container_port":8080,"host_port":18080,"range":1,"protocol":"tcp"}]`))
	meta := &ckpt.Metadata{SpecDump: specDump, Config: cfg}
	meta.Manifest.Annotations = map[string]string{
		ckpt.AnnRuntimeName:  "runc",
		ckpt.AnnCRIOName:     "fixture",
		ckpt.AnnBaseIncluded: baseCopy,
		ckpt.AnnBindKinds:    `{"/srv2":"dir"}`,
	}
	for k, v := range ann {
		if v == "" {
			delete(meta.Manifest.Annotations, k)
		} else {
			meta.Manifest.Annotations[k] = v
		}
	}
	return meta
}

// validate checks a manifest as Kubernetes would take it: decoded strictly
// into the API's own core/v1 types (an unknown or mistyped field fails),
// then the rules the API server applies to what the manifest uses (names,
// references between volumes and mounts, volume sources, ports, images),
// then CRI-O's restore rule: every mount spec.dump has, by destination.
func validate(t *testing.T, manifest []byte, specDumps ...[]byte) (*corev1.Pod, map[string]ckpttest.ImageVolume) {
	t.Helper()
	pod, images, err := check(t, manifest, specDumps...)
	if err != nil {
		t.Fatalf("%v\n%s", err, manifest)
	}
	return pod, images
}

// check takes one spec.dump per container, in order.
func check(t *testing.T, manifest []byte, specDumps ...[]byte) (*corev1.Pod, map[string]ckpttest.ImageVolume, error) {
	rest, images := ckpttest.SplitImageVolumes(t, manifest)
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(rest, &pod); err != nil {
		return nil, nil, fmt.Errorf("manifest does not decode as a core/v1 Pod: %w", err)
	}
	var problems []string
	bad := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	if pod.APIVersion != "v1" || pod.Kind != "Pod" {
		bad("apiVersion/kind %s/%s", pod.APIVersion, pod.Kind)
	}
	for _, e := range validation.IsDNS1123Subdomain(pod.Name) {
		bad("pod name %q: %s", pod.Name, e)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		for _, e := range validation.IsDNS1123Label(v.Name) {
			bad("volume name %q: %s", v.Name, e)
		}
		if _, dup := vols[v.Name]; dup {
			bad("volume %q defined twice", v.Name)
		}
		vols[v.Name] = v
		n := 0
		if v.HostPath != nil {
			n++
			if !path.IsAbs(v.HostPath.Path) {
				bad("volume %q: hostPath %q is not absolute", v.Name, v.HostPath.Path)
			}
			if tp := v.HostPath.Type; tp != nil {
				switch *tp {
				case corev1.HostPathUnset, corev1.HostPathDirectoryOrCreate, corev1.HostPathDirectory, corev1.HostPathFileOrCreate,
					corev1.HostPathFile, corev1.HostPathSocket, corev1.HostPathCharDev, corev1.HostPathBlockDev:
				default:
					bad("volume %q: hostPath type %q", v.Name, *tp)
				}
			}
		}
		if v.EmptyDir != nil {
			n++
		}
		if iv, ok := images[v.Name]; ok {
			n++
			if _, err := reference.ParseDockerRef(iv.Reference); err != nil || !strings.Contains(iv.Reference, "@sha256:") {
				bad("image volume %q: reference %q is not a digest reference", v.Name, iv.Reference)
			}
			switch corev1.PullPolicy(iv.PullPolicy) {
			case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
			default:
				bad("image volume %q: pullPolicy %q", v.Name, iv.PullPolicy)
			}
		}
		if n != 1 || v.VolumeSource != (corev1.VolumeSource{HostPath: v.HostPath, EmptyDir: v.EmptyDir}) {
			bad("volume %q: want exactly one source, hostPath, emptyDir or image", v.Name)
		}
	}
	all := append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...)
	names := map[string]bool{}
	for _, c := range all {
		for _, e := range validation.IsDNS1123Label(c.Name) {
			bad("container name %q: %s", c.Name, e)
		}
		if names[c.Name] {
			bad("container %q defined twice", c.Name)
		}
		names[c.Name] = true
		if _, err := reference.ParseNormalizedNamed(c.Image); err != nil {
			bad("container %q: image %q: %v", c.Name, c.Image, err)
		}
		at := map[string]bool{}
		for _, m := range c.VolumeMounts {
			if _, ok := vols[m.Name]; !ok {
				bad("container %q mounts undefined volume %q", c.Name, m.Name)
			}
			if !path.IsAbs(m.MountPath) || at[m.MountPath] {
				bad("container %q: mount path %q not absolute or given twice", c.Name, m.MountPath)
			}
			at[m.MountPath] = true
		}
		for _, p := range c.Ports {
			for _, e := range validation.IsValidPortNum(int(p.ContainerPort)) {
				bad("container %q: containerPort %d: %s", c.Name, p.ContainerPort, e)
			}
			if p.HostPort != 0 {
				for _, e := range validation.IsValidPortNum(int(p.HostPort)) {
					bad("container %q: hostPort %d: %s", c.Name, p.HostPort, e)
				}
			}
			switch p.Protocol {
			case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
			default:
				bad("container %q: protocol %q", c.Name, p.Protocol)
			}
		}
	}
	if len(pod.Spec.Containers) != len(specDumps) {
		return nil, nil, fmt.Errorf("%d containers, want %d", len(pod.Spec.Containers), len(specDumps))
	}
	for i, c := range pod.Spec.Containers {
		if _, err := reference.ParseDockerRef(c.Image); err != nil || !strings.Contains(c.Image, "@sha256:") {
			bad("checkpoint image %q is not a digest reference", c.Image)
		}
		required, err := RequiredMounts(specDumps[i])
		if err != nil {
			return nil, nil, err
		}
		defined := map[string]bool{KubeletHosts: true} // the kubelet's
		for _, m := range c.VolumeMounts {
			defined[m.MountPath] = true
		}
		for _, m := range required {
			if !defined[m.Destination] {
				bad("CRI-O would refuse the restore of %s: no mount at %s", c.Name, m.Destination)
			}
		}
	}
	if pod.Spec.HostNetwork || (pod.Spec.ShareProcessNamespace != nil && *pod.Spec.ShareProcessNamespace) {
		bad("hostNetwork or shareProcessNamespace set")
	}
	if len(pod.Spec.InitContainers) > 0 {
		bad("init containers %v: they would run a command in an image that may lack it", pod.Spec.InitContainers)
	}
	if len(problems) > 0 {
		return nil, nil, fmt.Errorf("invalid manifest:\n  %s", strings.Join(problems, "\n  "))
	}
	return &pod, images, nil
}

func generate(t *testing.T, meta *ckpt.Metadata, o Options) ([]byte, *corev1.Pod, map[string]ckpttest.ImageVolume) {
	t.Helper()
	if o.Image == "" {
		o.Image = ckptImage
	}
	r, err := Generate(meta, o)
	if err != nil {
		t.Fatal(err)
	}
	y, err := r.YAML()
	if err != nil {
		t.Fatal(err)
	}
	pod, images := validate(t, y, meta.SpecDump)
	return y, pod, images
}

func TestGenerate(t *testing.T) {
	meta := fixture(t, nil, nil)
	y, pod, images := generate(t, meta, Options{MountMap: []string{"/srv=/mnt/disk2/srv"}})
	t.Logf("\n%s", y)
	if pod.Name != "fixture" {
		t.Errorf("pod name %q", pod.Name)
	}
	if len(images) != 1 || images[BaseVolumeName] != (ckpttest.ImageVolume{Reference: baseCopy, PullPolicy: "IfNotPresent"}) {
		t.Errorf("image volumes %+v, want %s pulling %s", images, BaseVolumeName, baseCopy)
	}
	c := pod.Spec.Containers[0]
	if c.Image != ckptImage || c.Name != "fixture" {
		t.Errorf("container %s image %s", c.Name, c.Image)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = v
	}
	mounts := map[string]corev1.Volume{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = vols[m.Name]
	}
	if len(mounts) != 2 {
		t.Errorf("mounts %v, want /srv2 and /data", mounts)
	}
	if hp := mounts["/srv2"].HostPath; hp == nil || hp.Path != "/mnt/disk2/srv" || hp.Type == nil || *hp.Type != corev1.HostPathDirectory {
		t.Errorf("/srv2 from %+v, want hostPath /mnt/disk2/srv (Directory)", mounts["/srv2"])
	}
	if mounts["/data"].EmptyDir == nil {
		t.Errorf("/data (volume fixvol, not mapped) from %+v, want an emptyDir", mounts["/data"])
	}
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != 8080 || c.Ports[0].HostPort != 18080 || c.Ports[0].Protocol != corev1.ProtocolTCP {
		t.Errorf("ports %+v", c.Ports)
	}
	for _, m := range c.VolumeMounts {
		if m.Name == BaseVolumeName {
			t.Errorf("the base image volume is mounted at %s; CRI-O's restore would ignore it", m.MountPath)
		}
	}
	for _, want := range []string{"# CRI-O does not pull the base image: the kubelet pulls " + baseCopy + " as image volume", "enable_criu_support = true", "volume \"fixvol\"", "--mount-map /var/lib/containers/storage/volumes/fixvol/_data=NODE_PATH", "/etc/hosts is the kubelet's"} {
		if !bytes.Contains(y, []byte(want)) {
			t.Errorf("manifest lacks %q", want)
		}
	}
	for _, unwanted := range []string{"creationTimestamp", "status:", "resources:"} {
		if bytes.Contains(y, []byte(unwanted)) {
			t.Errorf("manifest has empty field %q", unwanted)
		}
	}
}

func TestGenerateVariants(t *testing.T) {
	// A volume given a node path, a read-only file bind, a tmpfs, a name
	// Kubernetes would refuse, and the base image by origin digest.
	meta := fixture(t, map[string]string{
		ckpt.AnnBaseIncluded: "",
		ckpt.AnnBaseName:     "quay.io/org/app:1.0",
		ckpt.AnnBaseDigest:   "sha256:aa00000000000000000000000000000000000000000000000000000000000000",
		ckpt.AnnBindKinds:    `{"/srv2":"dir","/etc/app.conf":"file"}`,
	}, func(spec map[string]any) {
		spec["mounts"] = append(spec["mounts"].([]any),
			map[string]any{"destination": "/etc/app.conf", "type": "bind", "source": "/etc/web.conf", "options": []any{"rbind", "ro"}},
			map[string]any{"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": []any{"rw"}},
		)
	})
	meta.Config.SetRaw("name", json.RawMessage(`"My_App.1"`))
	y, pod, images := generate(t, meta, Options{MountMap: []string{"/var/lib/containers/storage/volumes/fixvol/_data=/srv/fixvol"}})
	t.Logf("\n%s", y)
	if pod.Name != "my-app-1" || pod.Spec.Containers[0].Name != "my-app-1" {
		t.Errorf("names %q/%q, want my-app-1", pod.Name, pod.Spec.Containers[0].Name)
	}
	if got := images[BaseVolumeName].Reference; got != "quay.io/org/app@sha256:aa00000000000000000000000000000000000000000000000000000000000000" {
		t.Errorf("base image %q", got)
	}
	byPath := map[string]corev1.VolumeMount{}
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = v
	}
	for _, m := range pod.Spec.Containers[0].VolumeMounts {
		byPath[m.MountPath] = m
	}
	if v := vols[byPath["/data"].Name]; v.HostPath == nil || v.HostPath.Path != "/srv/fixvol" {
		t.Errorf("/data from %+v, want hostPath /srv/fixvol", v)
	}
	if m := byPath["/etc/app.conf"]; !m.ReadOnly || vols[m.Name].HostPath == nil || *vols[m.Name].HostPath.Type != corev1.HostPathFile {
		t.Errorf("/etc/app.conf: %+v %+v, want a read-only File hostPath", m, vols[m.Name])
	}
	if v := vols[byPath["/scratch"].Name]; v.EmptyDir == nil || v.EmptyDir.Medium != corev1.StorageMediumMemory {
		t.Errorf("/scratch from %+v, want a memory emptyDir", v)
	}
	// --name and --base-image win.
	_, pod, images = generate(t, meta, Options{Name: "web-1", BaseImage: baseCopy})
	if pod.Name != "web-1" || images[BaseVolumeName].Reference != baseCopy {
		t.Errorf("name %q base %+v", pod.Name, images)
	}
	// pushed with --tcp-close: the node's CRIU configuration must close
	// the connections, not keep them.
	tc := fixture(t, map[string]string{ckpt.AnnBaseIncluded: baseCopy, ckpt.AnnTCPEstablished: "true", ckpt.AnnTCPClose: "true"}, nil)
	if y, _, _ = generate(t, tc, Options{}); !bytes.Contains(y, []byte("pushed with --tcp-close")) || bytes.Contains(y, []byte("has the line tcp-established")) {
		t.Errorf("--tcp-close image: want the tcp-close note alone:\n%s", y)
	}
	// --base-pull=node: no image volume, the pull is the user's.
	y, pod, images = generate(t, meta, Options{BasePull: BaseOnNode, BaseImage: baseCopy})
	if len(images) != 0 || len(pod.Spec.Volumes) != len(pod.Spec.Containers[0].VolumeMounts) || !bytes.Contains(y, []byte("run `crictl pull "+baseCopy+"` on the node first")) {
		t.Errorf("--base-pull=node: image volumes %+v, volumes %d:\n%s", images, len(pod.Spec.Volumes), y)
	}
}

func TestGenerateRefusals(t *testing.T) {
	for _, tt := range []struct {
		name string
		meta func() *ckpt.Metadata
		o    Options
		want error
		msg  string
	}{
		{"no CRI-O annotation", func() *ckpt.Metadata { return fixture(t, map[string]string{ckpt.AnnCRIOName: ""}, nil) }, Options{},
			ErrNotRestorable, "has no io.kubernetes.cri-o.annotations.checkpoint.name annotation"},
		{"no spec annotation", func() *ckpt.Metadata {
			return fixture(t, nil, func(s map[string]any) {
				delete(s["annotations"].(map[string]any), ckpt.SpecAnnCRIOAnnotations)
			})
		}, Options{}, ErrNotRestorable, "no valid io.kubernetes.cri-o.Annotations"},
		{"invalid spec annotation", func() *ckpt.Metadata {
			return fixture(t, nil, func(s map[string]any) { s["annotations"].(map[string]any)[ckpt.SpecAnnCRIOAnnotations] = "{" })
		}, Options{}, ErrNotRestorable, "no valid io.kubernetes.cri-o.Annotations"},
		{"no rootfsImageRef", func() *ckpt.Metadata {
			m := fixture(t, nil, nil)
			m.Config.SetRaw("rootfsImageRef", json.RawMessage(`""`))
			return m
		}, Options{}, ErrNotRestorable, `under the source host's name "localhost/podman-migrate-test:latest"`},
		{"local base image", func() *ckpt.Metadata {
			return fixture(t, map[string]string{ckpt.AnnBaseIncluded: "", ckpt.AnnBaseDigest: "sha256:aa00000000000000000000000000000000000000000000000000000000000000"}, nil)
		}, Options{}, ErrNotRestorable, "(hint: push with --include-base"},
		{"mount of another kind", func() *ckpt.Metadata {
			return fixture(t, nil, func(s map[string]any) {
				s["mounts"] = append(s["mounts"].([]any), map[string]any{"destination": "/mnt/q", "type": "mqueue", "source": "mqueue"})
			})
		}, Options{}, ErrNotRestorable, "the mqueue mount at /mnt/q has no Kubernetes equivalent"},
		{"podman's own file", func() *ckpt.Metadata {
			return fixture(t, nil, func(s map[string]any) {
				s["mounts"] = append(s["mounts"].([]any), map[string]any{"destination": "/run/extra", "type": "bind",
					"source": "/run/containers/storage/overlay-containers/d3450e54e1ec2a965bd671e3a95ecbb471c4fd667afd7f05bf7ffc080c4d427c/userdata/extra"})
			})
		}, Options{}, ErrNotRestorable, "/run/extra comes from podman's own files"},
		{"unused map", func() *ckpt.Metadata { return fixture(t, nil, nil) }, Options{MountMap: []string{"/nowhere=/x"}}, mountmap.ErrBadMap, "--mount-map /nowhere=/x matches no mount"},
		{"relative map", func() *ckpt.Metadata { return fixture(t, nil, nil) }, Options{MountMap: []string{"srv=/x"}}, mountmap.ErrBadMap, "want SRC=DST, both absolute paths"},
		{"bad name", func() *ckpt.Metadata { return fixture(t, nil, nil) }, Options{Name: "Web_1"}, ErrBadName, `invalid pod name "Web_1"`},
		{"bad base pull", func() *ckpt.Metadata { return fixture(t, nil, nil) }, Options{BasePull: "init"}, ErrBadBasePull, `invalid --base-pull "init": want image-volume or node`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Generate(tt.meta(), Options{Image: ckptImage, MountMap: tt.o.MountMap, Name: tt.o.Name, BasePull: tt.o.BasePull})
			// The message, and the hint the CLI prints after it.
			if !errors.Is(err, tt.want) || err == nil || !strings.Contains(err.Error()+" (hint: "+fault.HintOf(err)+")", tt.msg) {
				t.Fatalf("err = %v, want %v containing %q", err, tt.want, tt.msg)
			}
		})
	}
}

// The validator must be able to fail: a manifest CRI-O would refuse, one
// with a name Kubernetes refuses, and one with a misspelt field.
func TestValidateCanFail(t *testing.T) {
	meta := fixture(t, nil, nil)
	for _, tt := range []struct {
		name, want string
		edit       func(r *Result)
		raw        func(y []byte) []byte
	}{
		{"missing mount", "CRI-O would refuse the restore of fixture: no mount at /data", func(r *Result) {
			r.Pod.Spec.Containers[0].VolumeMounts = r.Pod.Spec.Containers[0].VolumeMounts[:1]
		}, nil},
		{"bad volume name", `volume name "Bad_Name"`, func(r *Result) {
			r.Pod.Spec.Volumes[0].Name = "Bad_Name"
			r.Pod.Spec.Containers[0].VolumeMounts[0].Name = "Bad_Name"
		}, nil},
		{"undefined volume", `mounts undefined volume "nowhere"`, func(r *Result) { r.Pod.Spec.Containers[0].VolumeMounts[0].Name = "nowhere" }, nil},
		{"tag, not digest", "is not a digest reference", func(r *Result) { r.Pod.Spec.Containers[0].Image = "registry.example:5000/ckpt/fixture:v1" }, nil},
		{"unknown field", `unknown field "volumeMount"`, nil, func(y []byte) []byte {
			return bytes.Replace(y, []byte("volumeMounts:"), []byte("volumeMount:"), 1)
		}},
		{"base by tag", `image volume "podman-migrate-base": reference "registry.example:5000/base:v1" is not a digest reference`, func(r *Result) {
			r.ImageVolumes[BaseVolumeName] = ImageVolume{Reference: "registry.example:5000/base:v1", PullPolicy: "IfNotPresent"}
		}, nil},
		{"image volume lost", `volume "podman-migrate-base": want exactly one source`, func(r *Result) { r.ImageVolumes = nil }, nil},
		{"an init container", "init containers", func(r *Result) {
			r.Pod.Spec.InitContainers = []v1.Container{{Name: "pull-base-image", Image: baseCopy, Command: []string{"true"}}}
		}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Generate(meta, Options{Image: ckptImage})
			if err != nil {
				t.Fatal(err)
			}
			if tt.edit != nil {
				tt.edit(r)
			}
			y, err := r.YAML()
			if err != nil {
				t.Fatal(err)
			}
			if tt.raw != nil {
				y = tt.raw(y)
			}
			if _, _, err := check(t, y, meta.SpecDump); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("check = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// samplePodRecord is a pod of two members, each the fixture's checkpoint
// under its own name, image and base, publishing one port.
func samplePodRecord(t *testing.T) (*ckpt.Pod, []Member) {
	t.Helper()
	rec := &ckpt.Pod{Name: "shop", Hostname: "shop", Shared: []string{"ipc", "net", "uts", "pid"},
		Ports: []ckpt.PodPort{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}}}
	var members []Member
	for i, n := range []string{"web_a", "web.a"} { // one DNS label for both
		meta := fixture(t, map[string]string{ckpt.AnnBaseIncluded: fmt.Sprintf("registry.example:5000/ckpt/base%d@sha256:%064d", i, i), ckpt.AnnTCPEstablished: "true"}, nil)
		meta.Config.SetRaw("name", json.RawMessage(`"`+n+`"`))
		meta.Config.SetRaw("newPortMappings", json.RawMessage(`[]`))
		d := fmt.Sprintf("sha256:%064d", 10+i)
		rec.Members = append(rec.Members, ckpt.PodMember{Name: n, Digest: digest.Digest(d)})
		members = append(members, Member{Meta: meta, Image: "registry.example:5000/ckpt/shop@" + d})
	}
	return rec, members
}

// TestGeneratePod: one container per member, in order, each its member's
// image with its own mounts; the pod's ports on the first; one image
// volume per base image; a --mount-map any member uses is taken.
func TestGeneratePod(t *testing.T) {
	rec, members := samplePodRecord(t)
	r, err := GeneratePod(rec, members, Options{MountMap: []string{"/srv=/mnt/srv"}})
	if err != nil {
		t.Fatal(err)
	}
	y, err := r.YAML()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", y)
	pod, images := validate(t, y, members[0].Meta.SpecDump, members[1].Meta.SpecDump)
	if pod.Name != "shop" || pod.Spec.Hostname != "shop" {
		t.Errorf("pod %q hostname %q", pod.Name, pod.Spec.Hostname)
	}
	cs := pod.Spec.Containers
	if cs[0].Name != "web-a" || cs[1].Name != "web-a-2" || cs[0].Image != members[0].Image || cs[1].Image != members[1].Image {
		t.Errorf("containers %s (%s), %s (%s)", cs[0].Name, cs[0].Image, cs[1].Name, cs[1].Image)
	}
	if len(cs[0].Ports) != 1 || cs[0].Ports[0].HostPort != 8080 || cs[0].Ports[0].ContainerPort != 80 || cs[0].Ports[0].Protocol != corev1.ProtocolTCP || len(cs[1].Ports) != 0 {
		t.Errorf("ports %+v and %+v, want the pod's 8080:80 on the first", cs[0].Ports, cs[1].Ports)
	}
	if len(images) != 2 || !strings.Contains(images[BaseVolumeName].Reference, "base0") || !strings.Contains(images[BaseVolumeName+"-2"].Reference, "base1") {
		t.Errorf("image volumes %+v, want one per base", images)
	}
	if m0, m1 := cs[0].VolumeMounts, cs[1].VolumeMounts; m0[0].Name == m1[0].Name || m0[1].Name != m1[1].Name {
		t.Errorf("mounts %+v and %+v: want /srv2 each its own volume, podman volume fixvol (/data) one for both", m0, m1)
	}
	for _, want := range []string{`Restores pod "shop": 2 containers`, "shared its pid namespace", "/etc/hosts is the kubelet's", "/etc/criu/runc.conf"} {
		if !bytes.Contains(y, []byte(want)) {
			t.Errorf("manifest lacks %q", want)
		}
	}
	for _, once := range []string{"/etc/hosts is the kubelet's", "/etc/criu/runc.conf"} {
		if n := bytes.Count(y, []byte(once)); n != 1 {
			t.Errorf("note %q given %d times", once, n)
		}
	}
}

func TestGeneratePodRefusals(t *testing.T) {
	rec, members := samplePodRecord(t)
	if _, err := GeneratePod(rec, members[:1], Options{}); !errors.Is(err, ErrNotRestorable) {
		t.Errorf("a member short: %v", err)
	}
	if _, err := GeneratePod(rec, members, Options{MountMap: []string{"/nowhere=/x"}}); !errors.Is(err, mountmap.ErrBadMap) {
		t.Errorf("an unused --mount-map: %v", err)
	}
	delete(members[1].Meta.Manifest.Annotations, ckpt.AnnCRIOName)
	if _, err := GeneratePod(rec, members, Options{}); !errors.Is(err, ErrNotRestorable) || !strings.Contains(err.Error(), `member "web.a"`) {
		t.Errorf("a member CRI-O cannot restore: %v", err)
	}
}
