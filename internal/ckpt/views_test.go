package ckpt

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
)

// jsonEqual reports whether two documents hold the same JSON.
func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(x, y)
}

// TestSpecKeepsWhatItDoesNotKnow: a Spec read and written back, mounts
// included, is the same JSON; an edited mount keeps its other fields.
func TestSpecKeepsWhatItDoesNotKnow(t *testing.T) {
	in := ckpttest.Members(t, ckpttest.Tar(t, ckpttest.Archive(t)))[SpecDump]
	s, err := ParseSpec(in)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := s.Mounts()
	if err != nil || len(ms) != 13 {
		t.Fatalf("%d mounts, %v", len(ms), err)
	}
	if err := s.SetMounts(ms); err != nil {
		t.Fatal(err)
	}
	out, err := s.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if !jsonEqual(t, in, out) {
		t.Error("spec.dump changed on the way through")
	}
	if got := s.Args(); !reflect.DeepEqual(got, []string{"/bin/workload"}) {
		t.Errorf("args %q", got)
	}

	s, _ = ParseSpec([]byte(`{"mounts":[{"destination":"/a","source":"/x","type":"bind","uidMappings":[{"size":1}]}],"x-new":{"k":1e400}}`))
	ms, _ = s.Mounts()
	ms[0].SetSource("/y")
	if err := s.SetMounts(ms); err != nil {
		t.Fatal(err)
	}
	out, _ = s.Bytes()
	if want := `{"mounts":[{"destination":"/a","source":"/y","type":"bind","uidMappings":[{"size":1}]}],"x-new":{"k":1e400}}`; string(out) != want {
		t.Errorf("edited spec %s, want %s", out, want)
	}

	for _, bad := range []string{`null`, `[]`, `nope`} {
		if _, err := ParseSpec([]byte(bad)); err == nil {
			t.Errorf("ParseSpec(%s) accepted", bad)
		}
	}
	s, _ = ParseSpec([]byte(`{"mounts":[null,{"type":"bind","destination":"/d","source":"/s","options":["ro"]}]}`))
	ms, err = s.Mounts()
	if err == nil || len(ms) != 2 || !ms[1].ReadOnly() {
		t.Errorf("a null mount: %+v, %v; want an error and what could be read", ms, err)
	}
}

func TestUserBinds(t *testing.T) {
	id := "d3450e54e1ec2a965bd671e3a95ecbb471c4fd667afd7f05bf7ffc080c4d427c"
	ms := []SpecMount{
		{Destination: "/srv2", Type: "bind", Source: "/srv"},
		{Destination: "/data", Type: "bind", Source: "/var/lib/containers/storage/volumes/v/_data"},
		{Destination: "/etc/hosts", Type: "bind", Source: "/anything"},
		{Destination: "/run/x", Type: "bind", Source: "/var/lib/containers/storage/overlay-containers/" + id + "/userdata/x"},
		{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs"},
	}
	got := UserBinds(ms, map[string]string{"/data": "v"})
	if len(got) != 1 || got[0].Destination != "/srv2" {
		t.Errorf("user binds %+v, want /srv2 only", got)
	}
}

func TestNetStatus(t *testing.T) {
	in := []byte(`{"podman":{"interfaces":{"eth0":{"subnets":[{"ipnet":"10.88.0.33/16","gateway":"10.88.0.1"}],"mac_address":"1a:3e"}},"dns_server_ips":["10.88.0.1"]}}`)
	s, err := ParseNetStatus(in)
	if err != nil {
		t.Fatal(err)
	}
	att, ok := s.Network("podman")
	cidrs, mac := att.Addresses()
	if !ok || !reflect.DeepEqual(cidrs, []string{"10.88.0.33/16"}) || mac != "1a:3e" {
		t.Errorf("podman: %v %q %q", ok, cidrs, mac)
	}
	if !s.Rename("podman", "prod") || s.Rename("nowhere", "x") {
		t.Error("Rename reports wrongly")
	}
	out, _ := s.Bytes()
	if !jsonEqual(t, out, bytes.Replace(in, []byte(`"podman"`), []byte(`"prod"`), 1)) {
		t.Errorf("renamed network.status %s lost content", out)
	}
	for _, absent := range [][]byte{nil, []byte("null")} {
		if s, err := ParseNetStatus(absent); s != nil || err != nil || s.Names() != nil {
			t.Errorf("ParseNetStatus(%q) = %v, %v", absent, s, err)
		}
	}
}

// TestProvenanceRoundTrip: what ToAnnotations writes,
// ProvenanceFromAnnotations reads back, and empty values are not written.
func TestProvenanceRoundTrip(t *testing.T) {
	p := Provenance{
		Name: "web", RawImageName: "app", RootfsImageID: hex64, RootfsImageName: "quay.io/x/app:1",
		PodmanVersion: "4.3.1", CRIUVersion: "3.17", RuntimeName: "crun", RuntimeVersion: "1.8",
		HostArch: "amd64", HostKernel: "6.1", CgroupVersion: "v2", DistributionName: "debian", DistributionVersion: "12",
		BaseName: "quay.io/x/app:1", BaseDigest: "sha256:" + hex64, BaseIncluded: "r/x@sha256:" + hex64,
		Format: FormatVersion, ToolVersion: "v1", SourceID: "abc", Created: "2026-01-02T03:04:05Z",
		CRIOName: "web", BindKinds: BindKinds{"/a": BindDir, "/b<": BindFile},
		Options: &Options{TCPEstablished: true},
	}
	a := p.ToAnnotations()
	if len(a) != 25 || a[AnnConmonVersion] != "" {
		t.Errorf("%d annotations, conmon %q: want every non-empty field and no empty one", len(a), a[AnnConmonVersion])
	}
	if a[AnnBindKinds] != `{"/a":"dir","/b\u003c":"file"}` || a[AnnTCPEstablished] != "true" {
		t.Errorf("bind kinds %s, tcp %s", a[AnnBindKinds], a[AnnTCPEstablished])
	}
	if diff := cmp.Diff(p, ProvenanceFromAnnotations(a)); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if dir, known := p.BindKinds.Dir("/a"); !dir || !known {
		t.Error("/a is a directory")
	}
	if _, known := p.BindKinds.Dir("/c"); known {
		t.Error("/c is not recorded")
	}
	q := ProvenanceFromAnnotations(map[string]string{AnnBindKinds: `{"/a":1}`})
	if q.BindKinds != nil || q.Options != nil {
		t.Errorf("malformed bind kinds or absent options read as %+v", q)
	}
}

func TestShortID(t *testing.T) {
	if ShortID(hex64) != "ce4431b29f26" || ShortID("abc") != "abc" {
		t.Error("ShortID")
	}
}

// TestSetNamespacePath: the path lands on the namespace of that type only,
// other namespaces and fields stay, and a missing namespace is an error.
func TestSetNamespacePath(t *testing.T) {
	s, err := ParseSpec([]byte(`{"linux":{"namespaces":[{"type":"pid"},{"type":"network","path":"/proc/7/ns/net"}],"x":1},"y":2}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetNamespacePath("network", "/proc/42/ns/net"); err != nil {
		t.Fatal(err)
	}
	out, _ := s.Bytes()
	if want := `{"linux":{"namespaces":[{"type":"pid"},{"path":"/proc/42/ns/net","type":"network"}],"x":1},"y":2}`; !jsonEqual(t, out, []byte(want)) {
		t.Errorf("spec %s, want %s", out, want)
	}
	if err := s.SetNamespacePath("ipc", "/proc/42/ns/ipc"); err == nil {
		t.Error("a namespace the spec does not have was set")
	}
	s, _ = ParseSpec([]byte(`{"mounts":[]}`))
	if err := s.SetNamespacePath("network", "/proc/42/ns/net"); err == nil {
		t.Error("a spec without a linux section took a namespace path")
	}
}
