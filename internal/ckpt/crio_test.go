package ckpt

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
	"github.com/podman-migrate/podman-migrate/internal/dump"
)

// crioMeta is the metadata of a checkpoint CRI-O 1.36.3 made (crictl
// checkpoint --export; captured on the project's machine kind): container
// revctr in pod revpod, namespace revns, with /data bound from /tmp/k9r/data.
func crioMeta(t *testing.T) *Metadata {
	t.Helper()
	cb, err := os.ReadFile("testdata/crio/config.dump")
	if err != nil {
		t.Fatal(err)
	}
	sb, err := os.ReadFile("testdata/crio/spec.dump")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := dump.ReadConfig(bytes.NewReader(cb))
	if err != nil {
		t.Fatal(err)
	}
	m := &Metadata{ConfigDump: cb, SpecDump: sb, Config: cfg}
	m.Manifest.Annotations = map[string]string{AnnCRIOName: "revctr", AnnBaseDigest: ""}
	return m
}

func TestMadeByCRIO(t *testing.T) {
	if !MadeByCRIO(crioMeta(t).SpecDump) {
		t.Error("CRI-O's spec.dump not recognised")
	}
	m := ckpttest.Members(t, ckpttest.Tar(t, ckpttest.Archive(t)))
	if MadeByCRIO(m[SpecDump]) || MadeByCRIO([]byte("not json")) {
		t.Error("podman's spec.dump, or garbage, taken for CRI-O's")
	}
}

func TestCRIONames(t *testing.T) {
	want := KubeNames{Pod: "revpod", Namespace: "revns", Container: "revctr"}
	if got := CRIONames(crioMeta(t).SpecDump); got != want {
		t.Errorf("from CRI-O's name: %+v, want %+v", got, want)
	}
	// The kubelet's labels win.
	spec := `{"annotations":{"io.kubernetes.cri-o.Labels":"{\"io.kubernetes.pod.name\":\"web-7d\",\"io.kubernetes.pod.namespace\":\"prod\",\"io.kubernetes.container.name\":\"app\"}","io.kubernetes.cri-o.Name":"k8s_x_y_z_uid_0"}}`
	if got := CRIONames([]byte(spec)); got != (KubeNames{Pod: "web-7d", Namespace: "prod", Container: "app"}) {
		t.Errorf("from labels: %+v", got)
	}
}

func TestFromCRIO(t *testing.T) {
	m := crioMeta(t)
	changed, err := FromCRIO(m)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(strings.Join(changed, "\n"))
	cfg := m.Config
	for k, want := range map[string]string{
		"rootfsImageID":   "ce4431b29f264c3b9f84b8b7d2e4531939b834fa8d13faf7d261d3b1058a57dd",
		"rootfsImageName": "127.0.0.1:5999/base/test:latest",
		"name":            "revctr",
		"networkMode":     "bridge",
	} {
		if got := cfg.String(k); got != want {
			t.Errorf("config.dump %s = %q, want %q", k, got, want)
		}
	}
	if diff := cmp.Diff([]string{"podman"}, cfg.NetworkNames()); diff != "" {
		t.Errorf("networks (-want +got):\n%s", diff)
	}
	if string(cfg.Raw("userVolumes")) != `["/data"]` || string(cfg.Raw("createNetNS")) != "true" {
		t.Errorf("userVolumes %s, createNetNS %s", cfg.Raw("userVolumes"), cfg.Raw("createNetNS"))
	}
	if got := m.Manifest.Annotations[AnnBaseDigest]; got != "sha256:ee8548e0aca70b7a754caf785d7bb4cee8d1bac1d96e631c712d090e71d0fc8e" {
		t.Errorf("base digest %q, want the one CRI-O recorded for 127.0.0.1:5999/base/test", got)
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
		Linux       struct {
			Namespaces []map[string]string `json:"namespaces"`
		} `json:"linux"`
		Mounts []any `json:"mounts"`
	}
	if err := json.Unmarshal(m.SpecDump, &spec); err != nil {
		t.Fatal(err)
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns["path"] != "" {
			t.Errorf("namespace %s kept CRI-O's path %s", ns["type"], ns["path"])
		}
	}
	if len(spec.Linux.Namespaces) != 5 || len(spec.Mounts) != 11 {
		t.Errorf("spec.dump lost content: %d namespaces, %d mounts", len(spec.Linux.Namespaces), len(spec.Mounts))
	}
	for k := range spec.Annotations {
		if strings.HasPrefix(k, "io.kubernetes.cri-o.") {
			t.Errorf("annotation %s kept", k)
		}
	}
	if spec.Annotations["io.container.manager"] != "cri-o" {
		t.Errorf("annotations %v", spec.Annotations)
	}
	// What ReadConfig parses and the metadata hold agree.
	again, err := dump.ReadConfig(bytes.NewReader(m.ConfigDump))
	if err != nil || again.Name() != "revctr" {
		t.Errorf("ConfigDump does not match Config: %v", err)
	}
}

func TestDescribeCRIO(t *testing.T) {
	d := Describe(crioMeta(t))
	if d.Format != "cri-o" || d.Kubernetes == nil || *d.Kubernetes != (KubeNames{Pod: "revpod", Namespace: "revns", Container: "revctr"}) {
		t.Fatalf("format %q, kubernetes %+v", d.Format, d.Kubernetes)
	}
	if d.Container.Name != "revctr" || d.Container.Image != "127.0.0.1:5999/base/test:latest" || d.Source.Runtime != "runc" ||
		d.Base.ID != "ce4431b29f264c3b9f84b8b7d2e4531939b834fa8d13faf7d261d3b1058a57dd" || d.Base.Digest == "" {
		t.Errorf("description %+v", d)
	}
	if diff := cmp.Diff([]BindFacts{{Source: "/tmp/k9r/data", Destination: "/data"}}, d.Binds); diff != "" {
		t.Errorf("binds (-want +got):\n%s", diff)
	}
}

func TestRoleOfCRIOMembers(t *testing.T) {
	for _, n := range []string{CRIOBindMounts, DumpLog, CRIOLogFile} {
		if role, _, ok := RoleOf(n); !ok || role != RoleMetadata {
			t.Errorf("RoleOf(%s) = %s, %t", n, role, ok)
		}
		if _, _, ok := RoleOf(n + "/x"); ok {
			t.Errorf("RoleOf(%s/x) accepted", n)
		}
	}
}
