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

func TestAnnotations(t *testing.T) {
	cfg, err := dump.ReadConfig(bytes.NewReader(ckpttest.ConfigDump()))
	if err != nil {
		t.Fatal(err)
	}
	ctr := &podman.Container{ID: "abc", Name: "fixture", OCIRuntime: "runc"}
	info := &podman.Info{}
	info.Host.OCIRuntime.Name = "crun" // the engine default, not what ran
	info.Host.Arch = "amd64"
	info.Version.Version = "4.3.1"
	created := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	a := annotations(cfg, ctr, info, "sha256:base", created, PushOptions{ToolVersion: "v1", LeaveRunning: true})
	for k, want := range map[string]string{
		ckpt.AnnName:            "fixture",
		ckpt.AnnRuntimeName:     "runc",
		ckpt.AnnRawImageName:    "localhost/podman-migrate-test:latest",
		ckpt.AnnRootfsImageName: "localhost/podman-migrate-test:latest",
		ckpt.AnnRootfsImageID:   cfg.RootfsImageID(),
		ckpt.AnnBaseName:        "localhost/podman-migrate-test:latest",
		ckpt.AnnBaseDigest:      "sha256:base",
		ckpt.AnnPodmanVersion:   "4.3.1",
		ckpt.AnnHostArch:        "amd64",
		ckpt.AnnFormat:          ckpt.FormatVersion,
		ckpt.AnnToolVersion:     "v1",
		ckpt.AnnSourceID:        "abc",
		ckpt.AnnLeaveRunning:    "true",
		ckpt.AnnCreated:         "2026-11-28T10:00:00Z",
	} {
		if a[k] != want {
			t.Errorf("%s = %q, want %q", k, a[k], want)
		}
	}
	if _, ok := a[ckpt.AnnHostKernel]; ok {
		t.Error(`empty values must be left out, not written as ""`)
	}
	ctr.OCIRuntime = ""
	if a := annotations(cfg, ctr, info, "", created, PushOptions{}); a[ckpt.AnnRuntimeName] != "crun" {
		t.Errorf("without inspect data the engine default is the best guess; got %q", a[ckpt.AnnRuntimeName])
	}
}
