//go:build e2e

package e2e

import (
	"archive/tar"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
)

// TestHostileImagesNeverReachPodman pushes crafted checkpoint images to the
// real registry and pulls them on B: each must be refused with exit 5,
// before podman sees it (podman 4.3.1 creates directories outside its
// extraction dir before it refuses a ".." entry).
func TestHostileImagesNeverReachPodman(t *testing.T) {
	escape := filepath.Join(os.TempDir(), fmt.Sprintf("podman-migrate-escape-%d", os.Getpid()))
	rel := "../../../../../../.." + escape
	base := ckpttest.Archive(t)
	with := func(extra ...ckpttest.Entry) []byte {
		return ckpttest.Tar(t, append(append([]ckpttest.Entry{}, base...), extra...))
	}
	swap := func(name string, body []byte) []byte {
		entries := append([]ckpttest.Entry{}, base...)
		for i := range entries {
			if entries[i].Name == name {
				entries[i].Body = body
			}
		}
		return ckpttest.Tar(t, entries)
	}
	cases := map[string][]byte{
		"dotdot":         with(ckpttest.Entry{Name: rel + "/a", Body: []byte("x")}),
		"symlink-out":    with(ckpttest.Entry{Name: "checkpoint/link", Type: tar.TypeSymlink, Linkname: escape}),
		"device":         with(ckpttest.Entry{Name: "checkpoint/kmem", Type: tar.TypeChar}),
		"rootfs-escape":  swap(ckpt.RootfsDiffTar, ckpttest.Tar(t, []ckpttest.Entry{{Name: "x", Type: tar.TypeSymlink, Linkname: escape}, {Name: "x/a", Body: []byte("x")}})),
		"deleted-escape": swap(ckpt.DeletedFiles, []byte(`["/../../../../`+strings.TrimPrefix(escape, "/")+`"]`)),
	}
	for name, layer := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			ckpttest.WriteImage(t, dir, []ckpttest.Layer{{Tar: layer}}, map[string]string{ckpt.AnnRuntimeName: "runc", ckpt.AnnName: "hostile"})
			ref := hosts.Registry + "/e2e/hostile-" + name + ":v1"
			if r := runCmd(t, "skopeo", "copy", "--dest-tls-verify=false", "oci:"+dir+":checkpoint", "docker://"+ref); r.code != 0 {
				t.Fatalf("skopeo copy: %s", r.stderr)
			}
			unchanged := unchangedOnB(t)
			r := migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--name", "e2e-hostile", ref)
			if r.code != 5 {
				t.Fatalf("exit %d, want 5; stderr %s", r.code, r.stderr)
			}
			if _, err := os.Stat(escape); !os.IsNotExist(err) {
				t.Fatalf("%s exists after the pull (%v)", escape, err)
			}
			unchanged()
		})
	}
}

// TestVersion reports the server the podman client sees.
func TestVersion(t *testing.T) {
	r := migrate(t, "--url", hosts.HostAURL, "version")
	want := podman(t, hosts.HostAURL, "version", "--format", "{{.Server.Version}}")
	if r.code != 0 || !strings.Contains(r.stdout, "Podman:      "+want) || !strings.Contains(r.stdout, "Version:     e2e") {
		t.Fatalf("version output %q, want server %s and client e2e", r.stdout, want)
	}
}
