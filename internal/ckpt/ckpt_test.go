package ckpt

import "testing"

func TestRoleOf(t *testing.T) {
	tests := []struct {
		name   string
		role   Role
		volume string
		ok     bool
	}{
		{"config.dump", RoleMetadata, "", true},
		{"spec.dump", RoleMetadata, "", true},
		{"deleted.files", RoleMetadata, "", true},
		{"devshm-checkpoint.tar", RoleMetadata, "", true},
		{"artifacts", RoleMetadata, "", true},
		{"artifacts/x", RoleMetadata, "", true},
		{"checkpoint", RoleCRIU, "", true},
		{"checkpoint/pages-1.img", RoleCRIU, "", true},
		{"rootfs-diff.tar", RoleRootfs, "", true},
		{"volumes", RoleVolume, "", true},
		{"volumes/data.tar", RoleVolume, "data", true},
		{"volumes/a/b.tar", "", "", false},
		{"volumes/.tar", "", "", false},
		{"volumes/data.tgz", "", "", false},
		{"config.dump/x", "", "", false},
		{"etc/passwd", "", "", false},
		{"rootfs-diff.tar/x", "", "", false},
	}
	for _, tt := range tests {
		role, vol, ok := RoleOf(tt.name)
		if role != tt.role || vol != tt.volume || ok != tt.ok {
			t.Errorf("RoleOf(%q) = %q, %q, %v; want %q, %q, %v", tt.name, role, vol, ok, tt.role, tt.volume, tt.ok)
		}
	}
}

func TestIsCheckpointAnnotations(t *testing.T) {
	if IsCheckpointAnnotations(nil) || IsCheckpointAnnotations(map[string]string{"org.opencontainers.image.title": "x"}) {
		t.Error("plain image taken for a checkpoint")
	}
	if !IsCheckpointAnnotations(map[string]string{AnnRuntimeName: "runc"}) || !IsCheckpointAnnotations(map[string]string{AnnFormat: "1"}) {
		t.Error("checkpoint image not recognised")
	}
}
