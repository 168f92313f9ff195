package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containers/image/v5/oci/layout"
	encutils "github.com/containers/ocicrypt/utils"

	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

// encryptedImage builds a checkpoint image and copies it, encrypted for a
// new RSA key, into an OCI layout. It returns the layout's reference, the
// private key, another key that does not fit, the public key and a
// policy that accepts anything.
func encryptedImage(t *testing.T) (ref, priv, other, pub, policy string) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	policy = write("policy.json", []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`))
	for _, name := range []string{"right", "other"} {
		pubPEM, privPEM, err := encutils.CreateRSATestKey(2048, nil, true)
		if err != nil {
			t.Fatal(err)
		}
		if name == "right" {
			pub, priv = write("right.pub.pem", pubPEM), write("right.pem", privPEM)
		} else {
			other = write("other.pem", privPEM)
		}
	}

	plain := fixtureImage(t, filepath.Join(dir, "plain"))
	ec, err := transfer.EncryptionConfig([]string{"jwe:" + pub})
	if err != nil {
		t.Fatal(err)
	}
	encDir := filepath.Join(dir, "encrypted")
	enc, err := layout.NewReference(encDir, "checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := transfer.Copy(ctx, "pushing", enc, plain, transfer.Options{SignaturePolicy: policy, Encrypt: ec}); err != nil {
		t.Fatal(err)
	}
	return "oci:" + encDir + ":checkpoint", priv, other, pub, policy
}

// TestEncryptedInspect reads an encrypted checkpoint in-process: refused
// with exit 5 naming --decryption-key without the right key, described
// with it (fetched whole and decrypted first).
func TestEncryptedInspect(t *testing.T) {
	ref, priv, other, pub, policy := encryptedImage(t)
	tests := []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"no key", nil, ExitInput, "--decryption-key: layers [0 1 2 3] of the image are encrypted and no key was given"},
		{"wrong key", []string{"--decryption-key", other}, ExitInput, "--decryption-key: none of the keys given opens encrypted layer 0"},
		{"public key", []string{"--decryption-key", pub}, ExitInput, "--decryption-key " + pub + ": not a private key"},
		{"missing key file", []string{"--decryption-key", pub + ".absent"}, ExitInput, "no such file"},
		{"missing policy", []string{"--decryption-key", priv, "--signature-policy", policy + ".absent"}, ExitUsage, "--signature-policy " + policy + ".absent"},
		{"right key among others", []string{"--decryption-key", other, "--decryption-key", priv}, ExitOK, "Container:   fixture"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"inspect", "--signature-policy", policy}, tt.args...)
			code, stdout, stderr := runCLI(t, append(args, ref)...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tt.code, stderr)
			}
			out := stderr
			if code == ExitOK {
				out = stdout
			} else if stdout != "" || strings.Count(stderr, "Error: ") != 1 {
				t.Errorf("failure output breaks the contract: stdout %q, stderr %q", stdout, stderr)
			}
			if !strings.Contains(out, tt.contains) {
				t.Errorf("output %q does not contain %q", out, tt.contains)
			}
		})
	}
}

// TestSealFlags: key and flag mistakes stop a push before it reaches
// podman (the socket here does not exist).
func TestSealFlags(t *testing.T) {
	noSocket := "unix://" + filepath.Join(t.TempDir(), "absent.sock")
	_, _, _, pub, _ := encryptedImage(t)
	for _, tt := range []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"layer without key", []string{"--encrypt-layer", "0"}, ExitUsage, "--encrypt-layer needs --encryption-key"},
		{"key without protocol", []string{"--encryption-key", pub}, ExitInput, "--encryption-key " + pub + ": want PROTOCOL:KEY"},
		{"unreadable key", []string{"--encryption-key", "jwe:" + pub + ".absent"}, ExitInput, "no such file"},
		{"signing into a layout", []string{"--sign-by-sigstore-private-key", pub}, ExitUsage, "needs a registry destination"},
		{"good key reaches podman", []string{"--encryption-key", "jwe:" + pub, "--encrypt-layer", "0", "--encrypt-layer", "-1"}, ExitPodman, "podman: connecting to"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"push", "--url", noSocket}, tt.args...)
			code, _, stderr := runCLI(t, append(args, "web", "oci:"+t.TempDir()+":x")...)
			if code != tt.code || !strings.Contains(stderr, tt.contains) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr, tt.code, tt.contains)
			}
		})
	}
}
