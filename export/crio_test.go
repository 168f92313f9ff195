package export

import (
	"bytes"
	"testing"
	"time"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
	"github.com/podman-migrate/podman-migrate/internal/dump"
)

func TestCRIOAnnotation(t *testing.T) {
	cfg, err := dump.ReadConfig(bytes.NewReader(ckpttest.ConfigDump()))
	if err != nil {
		t.Fatal(err)
	}
	ctr := &podman.Container{ID: "abc", Name: "fixture", OCIRuntime: "runc"}
	a := annotations(cfg, ctr, &podman.Info{}, "", time.Now(), PushOptions{})
	if a[ckpt.AnnCRIOName] != "fixture" {
		t.Errorf("default: %s = %q, want fixture", ckpt.AnnCRIOName, a[ckpt.AnnCRIOName])
	}
	a = annotations(cfg, ctr, &podman.Info{}, "", time.Now(), PushOptions{NoCRIOAnnotations: true})
	if _, ok := a[ckpt.AnnCRIOName]; ok {
		t.Errorf("--no-cri-o-annotations: %s is there", ckpt.AnnCRIOName)
	}
}
