package transfer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containers/image/v5/oci/layout"
	"github.com/containers/image/v5/pkg/compression"
	"github.com/containers/image/v5/signature/sigstore"
	"github.com/containers/image/v5/types"
	encutils "github.com/containers/ocicrypt/utils"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
)

// rsaKeys writes an RSA key pair (the private key protected by pass when
// pass is not nil) and returns the files.
func rsaKeys(t *testing.T, dir, name string, pass []byte) (pub, priv string) {
	t.Helper()
	pubPEM, privPEM, err := encutils.CreateRSATestKey(2048, pass, true)
	if err != nil {
		t.Fatal(err)
	}
	pub, priv = filepath.Join(dir, name+".pub.pem"), filepath.Join(dir, name+".pem")
	if err := os.WriteFile(pub, pubPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(priv, privPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func wantKeyError(t *testing.T, err error, contains ...string) {
	t.Helper()
	if !errors.Is(err, ErrKey) {
		t.Fatalf("err = %v, want an ErrKey", err)
	}
	t.Log(err)
	for _, c := range contains {
		if !strings.Contains(err.Error(), c) {
			t.Errorf("error %q does not contain %q", err, c)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error spans lines: %q", err)
	}
}

func TestEncryptionConfig(t *testing.T) {
	dir := t.TempDir()
	pub, priv := rsaKeys(t, dir, "a", nil)
	pub2, _ := rsaKeys(t, dir, "b", nil)
	if ec, err := EncryptionConfig(nil); ec != nil || err != nil {
		t.Fatalf("no keys: %v, %v; want nothing", ec, err)
	}
	ec, err := EncryptionConfig([]string{"jwe:" + pub, "jwe:" + pub2})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(ec.Parameters["pubkeys"]); n != 2 {
		t.Fatalf("%d public keys in the config, want 2", n)
	}
	for _, tt := range []struct{ key, contains string }{
		{pub, "want PROTOCOL:KEY"},
		{"rot13:" + pub, "want PROTOCOL:KEY"},
		{"jwe:" + filepath.Join(dir, "absent.pem"), "absent.pem"},
		{"jwe:" + priv, "not a public key"},
	} {
		_, err := EncryptionConfig([]string{"jwe:" + pub, tt.key})
		wantKeyError(t, err, "--encryption-key "+tt.key, tt.contains)
	}
}

func TestDecryptionConfig(t *testing.T) {
	dir := t.TempDir()
	pub, priv := rsaKeys(t, dir, "plain", nil)
	_, locked := rsaKeys(t, dir, "locked", []byte("s3cret"))
	if dc, err := DecryptionConfig(nil); dc != nil || err != nil {
		t.Fatalf("no keys: %v, %v; want nothing", dc, err)
	}
	dc, err := DecryptionConfig([]string{priv, locked + ":s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(dc.Parameters["privkeys"]); n != 2 {
		t.Fatalf("%d private keys in the config, want 2", n)
	}
	for _, tt := range []struct{ key, file, contains string }{
		{filepath.Join(dir, "absent.pem"), filepath.Join(dir, "absent.pem"), "no such file"},
		{pub, pub, "not a private key"},
		{locked, locked, "password"},
		{locked + ":wrong", locked, "password"},
	} {
		_, err := DecryptionConfig([]string{tt.key})
		wantKeyError(t, err, "--decryption-key "+tt.file+":", tt.contains)
		if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), ":wrong") {
			t.Errorf("error shows the passphrase: %v", err)
		}
	}
}

func TestSigningPassphrase(t *testing.T) {
	dir := t.TempDir()
	pair, err := sigstore.GenerateKeyPair([]byte("sign-pass"))
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "key.private")
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("key.private", string(pair.PrivateKey))
	right, wrong := write("right", "sign-pass\nignored second line\n"), write("wrong", "nope\n")

	if p, err := SigningPassphrase(key, right); err != nil || string(p) != "sign-pass" {
		t.Fatalf("right passphrase: %q, %v", p, err)
	}
	if p, err := SigningPassphrase("", ""); p != nil || err != nil {
		t.Fatalf("no signing: %q, %v", p, err)
	}
	_, err = SigningPassphrase(key, wrong)
	wantKeyError(t, err, "--sign-by-sigstore-private-key "+key, "a wrong passphrase? give it with --sign-passphrase-file")
	_, err = SigningPassphrase(key, "")
	wantKeyError(t, err, "--sign-by-sigstore-private-key")
	_, err = SigningPassphrase(key, filepath.Join(dir, "absent"))
	wantKeyError(t, err, "--sign-passphrase-file "+filepath.Join(dir, "absent"))
	_, err = SigningPassphrase(filepath.Join(dir, "absent.key"), right)
	wantKeyError(t, err, "--sign-by-sigstore-private-key "+filepath.Join(dir, "absent.key"))
	_, err = SigningPassphrase("", right)
	wantKeyError(t, err, "needs --sign-by-sigstore-private-key")
}

// TestEncryptedCopy encrypts an image on its way into a layout, as push
// does, then checks the keys before any layer is read and decrypts it on
// the way back, as pull does.
func TestEncryptedCopy(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	pub, priv := rsaKeys(t, dir, "right", nil)
	_, other := rsaKeys(t, dir, "other", nil)
	secret := []byte("PM_SECRET=0123456789abcdef0123456789abcdef")
	plain := ckpttest.WriteImage(t, filepath.Join(dir, "plain"), []ckpttest.Layer{
		{Tar: ckpttest.Tar(t, []ckpttest.Entry{{Name: "config.dump", Body: secret}})},
		{Tar: ckpttest.Tar(t, []ckpttest.Entry{{Name: "checkpoint/pages-1.img", Body: ckpttest.Pages(1<<20, 1)}})},
	}, nil)
	ec, err := EncryptionConfig([]string{"jwe:" + pub})
	if err != nil {
		t.Fatal(err)
	}
	dc, err := DecryptionConfig([]string{priv})
	if err != nil {
		t.Fatal(err)
	}
	wrong, err := DecryptionConfig([]string{other})
	if err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		name   string
		layers []int
		want   []bool // encrypted, per layer
	}{
		{"all layers by default", nil, []bool{true, true}},
		{"only the last", []int{-1}, []bool{false, true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			encDir := filepath.Join(t.TempDir(), "enc")
			enc, _ := layout.NewReference(encDir, "checkpoint")
			o := Options{SignaturePolicy: policy, Encrypt: ec, EncryptLayers: tt.layers}
			if _, err := Copy(ctx, "pushing", enc, plain, o); err != nil {
				t.Fatal(err)
			}
			m := readManifest(t, enc)
			for i, l := range m.Layers {
				if got := strings.HasSuffix(l.MediaType, "+encrypted"); got != tt.want[i] {
					t.Errorf("layer %d: media type %s, encrypted %t, want %t", i, l.MediaType, got, tt.want[i])
				}
			}
			if found := blobsContain(t, encDir, secret); found != !tt.want[0] {
				t.Errorf("secret found in the blobs: %t, want %t", found, !tt.want[0])
			}

			src, err := enc.NewImageSource(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			_, encrypted, err := CheckDecryption(ctx, src, nil)
			if !encrypted {
				t.Fatal("CheckDecryption found nothing encrypted")
			}
			wantKeyError(t, err, "--decryption-key:", "no key was given")
			_, _, err = CheckDecryption(ctx, src, wrong)
			wantKeyError(t, err, "--decryption-key:", "none of the keys given opens encrypted layer")
			if _, _, err := CheckDecryption(ctx, src, dc); err != nil {
				t.Fatalf("the right key: %v", err)
			}

			back, _ := layout.NewReference(filepath.Join(t.TempDir(), "back"), "checkpoint")
			if _, err := Copy(ctx, "pulling", back, enc, Options{SignaturePolicy: policy, Decrypt: dc}); err != nil {
				t.Fatal(err)
			}
			for i, l := range readManifest(t, back).Layers {
				if strings.HasSuffix(l.MediaType, "+encrypted") {
					t.Errorf("layer %d pulled as %s, want it decrypted", i, l.MediaType)
				}
			}
		})
	}

	// An image without encrypted layers is read in place.
	src, err := plain.NewImageSource(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if mb, encrypted, err := CheckDecryption(ctx, src, nil); encrypted || err != nil || len(mb) == 0 {
		t.Fatalf("plain image: encrypted %t, %v", encrypted, err)
	}
	if !blobsContain(t, filepath.Join(dir, "plain"), secret) {
		t.Fatal("the scan cannot find the secret even in the plain image")
	}
}

func readManifest(t *testing.T, ref types.ImageReference) imgspecv1.Manifest {
	t.Helper()
	src, err := ref.NewImageSource(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	mb, _, err := src.GetManifest(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var m imgspecv1.Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// blobsContain reports whether any blob of the layout in dir holds b,
// decompressed where it is compressed (copy.Image compresses what it
// encrypts).
func blobsContain(t *testing.T, dir string, b []byte) bool {
	t.Helper()
	found := false
	err := filepath.WalkDir(filepath.Join(dir, "blobs"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		r, _, err := compression.AutoDecompress(f)
		if err != nil {
			return err
		}
		defer r.Close()
		data, err := io.ReadAll(r)
		if bytes.Contains(data, b) {
			found = true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// TestEncryptedPEM: a passphrase-protected key is told from a plain one,
// so a wrong passphrase that slips through the legacy PEM padding check
// (about 1 in 256) is still reported as a wrong password.
func TestEncryptedPEM(t *testing.T) {
	dir := t.TempDir()
	pub, priv := rsaKeys(t, dir, "plain", nil)
	_, locked := rsaKeys(t, dir, "locked", []byte("s3cret"))
	for file, want := range map[string]bool{locked: true, priv: false, pub: false, filepath.Join(dir, "absent.pem"): false} {
		if got := encryptedPEM(file); got != want {
			t.Errorf("encryptedPEM(%s) = %t, want %t", filepath.Base(file), got, want)
		}
	}
}
