//go:build e2e

package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containers/image/v5/pkg/compression"
	"github.com/containers/image/v5/signature/sigstore"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
)

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func writeFile(t *testing.T, path string, b []byte) string {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// rsaKeyPair writes an RSA key pair as PEM files in dir.
func rsaKeyPair(t *testing.T, dir, name string) (pub, priv string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub = writeFile(t, filepath.Join(dir, name+".pub.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))
	priv = writeFile(t, filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}))
	return pub, priv
}

// imageBlobs returns the digests (hex) of everything the registry stores
// for ref (the manifest, the config and the layers), and the manifest.
func imageBlobs(t *testing.T, ref string) (map[string]bool, imgspecv1.Manifest) {
	t.Helper()
	r := runCmd(t, "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+ref)
	if r.code != 0 {
		t.Fatalf("skopeo inspect %s: %s", ref, r.stderr)
	}
	var m imgspecv1.Manifest
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(r.stdout))
	blobs := map[string]bool{hex.EncodeToString(sum[:]): true, m.Config.Digest.Encoded(): true}
	for _, l := range m.Layers {
		blobs[l.Digest.Encoded()] = true
	}
	return blobs, m
}

// registryBlobsWith scans every blob the test registry stores, raw and,
// when it is compressed (zstd, gzip), decompressed, and returns the
// digests (hex) of those that hold needle.
func registryBlobsWith(t *testing.T, needle []byte) map[string]bool {
	t.Helper()
	root := filepath.Join(stateDir, "registry-data", "docker", "registry", "v2", "blobs", "sha256")
	found := map[string]bool{}
	scanned := 0
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "data" {
			return err
		}
		scanned++
		if holds(t, p, needle, false) || holds(t, p, needle, true) {
			found[filepath.Base(filepath.Dir(p))] = true
		}
		return nil
	})
	if err != nil || scanned == 0 {
		t.Fatalf("scanning %s: %v (%d blobs)", root, err, scanned)
	}
	return found
}

// holds streams the file at p (decompressed if asked and it is
// compressed) and reports whether it contains needle.
func holds(t *testing.T, p string, needle []byte, decompress bool) bool {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if decompress {
		_, dec, br, err := compression.DetectCompressionFormat(f)
		if err != nil || dec == nil {
			return false
		}
		rc, err := dec(br)
		if err != nil {
			return false
		}
		defer rc.Close()
		r = rc
	}
	buf := make([]byte, 1<<20)
	var tail []byte
	for {
		n, err := r.Read(buf)
		if n > 0 {
			chunk := append(tail, buf[:n]...)
			if bytes.Contains(chunk, needle) {
				return true
			}
			keep := min(len(needle)-1, len(chunk))
			tail = append([]byte(nil), chunk[len(chunk)-keep:]...)
		}
		if err != nil {
			// A truncated or corrupt stream (an encrypted blob that looks
			// compressed) ends the scan; the raw pass covered it.
			return false
		}
	}
}

// TestEncryptedCheckpoint: a secret planted in a running container's
// environment (so in its memory pages, config.dump and spec.dump) is in the
// registry's blobs when pushed plainly, and in none of them when pushed with
// --encryption-key; B restores the encrypted image with the private key,
// and refuses it, creating nothing, without one or with the wrong one.
func TestEncryptedCheckpoint(t *testing.T) {
	src, dst := "e2e-enc-src", "e2e-enc-dst"
	secret := randomHex(t, 16)
	keys := t.TempDir()
	pub, priv := rsaKeyPair(t, keys, "right")
	_, other := rsaKeyPair(t, keys, "other")

	before := startWorkload(t, src, "-e", "PM_SECRET="+secret)
	plainRef, encRef := hosts.Registry+"/e2e/enc-plain:v1", hosts.Registry+"/e2e/enc-jwe:v1"
	if r := migrate(t, "--url", hosts.HostAURL, "push", "--leave-running", "--tls-verify=false", src, plainRef); r.code != 0 {
		t.Fatalf("plain push failed: %s", r.stderr)
	}
	r := migrate(t, "--url", hosts.HostAURL, "push", "--leave-running", "--tls-verify=false", "--encryption-key", "jwe:"+pub, src, encRef)
	if r.code != 0 {
		t.Fatalf("encrypted push failed: %s", r.stderr)
	}
	pinned := strings.TrimSpace(r.stdout)

	plainBlobs, _ := imageBlobs(t, plainRef)
	encBlobs, m := imageBlobs(t, encRef)
	for i, l := range m.Layers {
		if !strings.HasSuffix(l.MediaType, "+encrypted") {
			t.Errorf("layer %d of the encrypted image is %s", i, l.MediaType)
		}
	}
	found := registryBlobsWith(t, []byte(secret))
	inPlain := 0
	for d := range found {
		if plainBlobs[d] {
			inPlain++
		} else {
			t.Errorf("blob %s holds the secret but is no blob of the plain image (encrypted image's: %t)", d, encBlobs[d])
		}
	}
	if inPlain == 0 {
		t.Fatal("the scan finds the secret in no blob of the plain image: it cannot tell encrypted from not")
	}
	t.Logf("secret found in %d blob(s) of the plain image, none of the encrypted one's", inPlain)

	t.Run("inspect shows the published layers", func(t *testing.T) {
		r := migrate(t, "inspect", "--tls-verify=false", "--format", "json", "--decryption-key", priv, pinned)
		var d struct {
			Digest string `json:"digest"`
			Layers []struct {
				Role      string `json:"role"`
				MediaType string `json:"mediaType"`
			} `json:"layers"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &d) != nil {
			t.Fatalf("inspect: exit %d, %q", r.code, r.stderr)
		}
		if !strings.HasSuffix(pinned, "@"+d.Digest) || len(d.Layers) == 0 || d.Layers[0].Role != "metadata" || !strings.HasSuffix(d.Layers[0].MediaType, "+encrypted") {
			t.Fatalf("inspect of %s: %+v", pinned, d)
		}
	})

	for _, tt := range []struct {
		name, message string
		keys          []string
	}{
		{"no key", "--decryption-key: layers [0 1 2] of the image are encrypted and no key was given", nil},
		{"wrong key", "--decryption-key: none of the keys given opens encrypted layer 0", []string{"--decryption-key", other}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			unchanged := unchangedOnB(t)
			args := append([]string{"--url", hosts.HostBURL, "pull", "--tls-verify=false", "--name", dst}, tt.keys...)
			r := migrate(t, append(args, pinned)...)
			if r.code != 5 || !strings.Contains(r.stderr, tt.message) {
				t.Fatalf("exit %d, stderr %q; want 5 and %q", r.code, r.stderr, tt.message)
			}
			if strings.Contains(r.stderr, "Fetching") || strings.Contains(r.stderr, "fetching and decrypting") {
				t.Fatalf("fetched layers although the key cannot open them: %q", r.stderr)
			}
			unchanged()
		})
	}

	// Planning an encrypted image fetches all of it; the plan is the same.
	if r := dryRun(t, "--name", dst, "--decryption-key", priv, pinned); r.code != 0 || !strings.Contains(r.stdout, "The restore can proceed") || !strings.Contains(r.stdout, strings.TrimPrefix(pinned[strings.LastIndex(pinned, "@"):], "@")) {
		t.Fatalf("dry run: exit %d, stdout %q", r.code, r.stdout)
	}

	rmB(t, dst)
	r = migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--name", dst, "--decryption-key", other, "--decryption-key", priv, pinned)
	if r.code != 0 {
		t.Fatalf("pull with the key failed: %s", r.stderr)
	}
	if !strings.Contains(r.stderr, "fetching and decrypting") || !strings.Contains(r.stderr, "Verified") {
		t.Errorf("want the whole image fetched and decrypted first, then verified: %q", r.stderr)
	}
	checkContinued(t, hosts.HostBURL, dst, before)
}

// sigstoreAttachments makes this machine's containers/image store and read
// sigstore signatures for the test registry as registry attachments.
func sigstoreAttachments(t *testing.T) {
	t.Helper()
	dir := "/etc/containers/registries.d"
	_, statErr := os.Stat(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "podman-migrate-e2e-"+randomHex(t, 6)+".yaml")
	cfg := fmt.Sprintf("docker:\n  %s:\n    use-sigstore-attachments: true\n", hosts.Registry)
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Remove(file)
		if os.IsNotExist(statErr) {
			os.Remove(dir) // only if empty: someone else's files stay
		}
	})
}

// sigstoreKeys writes a sigstore key pair and a passphrase file.
func sigstoreKeys(t *testing.T, dir, name string) (priv, pub, passFile string) {
	t.Helper()
	pass := randomHex(t, 8)
	pair, err := sigstore.GenerateKeyPair([]byte(pass))
	if err != nil {
		t.Fatal(err)
	}
	priv = writeFile(t, filepath.Join(dir, name+".private"), pair.PrivateKey)
	pub = writeFile(t, filepath.Join(dir, name+".pub"), pair.PublicKey)
	passFile = writeFile(t, filepath.Join(dir, name+".pass"), []byte(pass+"\n"))
	return priv, pub, passFile
}

// TestSignedCheckpoint: push signs with a sigstore key; under a policy that
// requires that key for the registry, pull restores the signed image and
// refuses, creating nothing, an unsigned one and one signed with another key.
func TestSignedCheckpoint(t *testing.T) {
	sigstoreAttachments(t)
	dir := t.TempDir()
	priv, pub, pass := sigstoreKeys(t, dir, "ours")
	otherPriv, _, otherPass := sigstoreKeys(t, dir, "theirs")
	policy := fmt.Sprintf(`{"default":[{"type":"insecureAcceptAnything"}],
 "transports":{"docker":{%q:[{"type":"sigstoreSigned","keyPath":%q,"signedIdentity":{"type":"matchRepository"}}]}}}`, hosts.Registry, pub)
	policyFile := writeFile(t, filepath.Join(dir, "policy.json"), []byte(policy))

	push := func(src, ref string, sign ...string) string {
		t.Helper()
		args := append([]string{"--url", hosts.HostAURL, "push", "--leave-running", "--tls-verify=false"}, sign...)
		r := migrate(t, append(args, src, ref)...)
		if r.code != 0 {
			t.Fatalf("push failed: %s", r.stderr)
		}
		return strings.TrimSpace(r.stdout)
	}

	src, dst := "e2e-signed-src", "e2e-signed-dst"
	before := startWorkload(t, src)
	signed := push(src, hosts.Registry+"/e2e/signed:v1", "--sign-by-sigstore-private-key", priv, "--sign-passphrase-file", pass)
	// The signature travelled as an attachment: sha256-HEX.sig.
	digest := signed[strings.LastIndex(signed, "@")+1:]
	sigTag := hosts.Registry + "/e2e/signed:" + strings.Replace(digest, ":", "-", 1) + ".sig"
	if r := runCmd(t, "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+sigTag); r.code != 0 {
		t.Fatalf("no sigstore attachment %s in the registry: %s", sigTag, r.stderr)
	}

	startWorkload(t, "e2e-unsigned-src")
	unsigned := push("e2e-unsigned-src", hosts.Registry+"/e2e/unsigned:v1")
	startWorkload(t, "e2e-theirs-src")
	theirs := push("e2e-theirs-src", hosts.Registry+"/e2e/signed-theirs:v1", "--sign-by-sigstore-private-key", otherPriv, "--sign-passphrase-file", otherPass)

	for _, tt := range []struct{ name, ref, message string }{
		{"unsigned", unsigned, "A signature was required, but no signature exists"},
		{"signed with another key", theirs, "rejected by the signature policy"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			unchanged := unchangedOnB(t)
			r := migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--signature-policy", policyFile, "--name", "e2e-refused-dst", tt.ref)
			if r.code != 5 || !strings.Contains(r.stderr, tt.message) || !strings.Contains(r.stderr, "hint: the signature policy") {
				t.Fatalf("exit %d, stderr %q; want 5 and %q", r.code, r.stderr, tt.message)
			}
			if strings.Contains(r.stderr, "Fetching") || strings.Contains(r.stderr, "Verified") {
				t.Fatalf("layers were fetched although the policy refused the image: %q", r.stderr)
			}
			unchanged()
		})
	}

	t.Run("inspect under the policy", func(t *testing.T) {
		if r := migrate(t, "inspect", "--tls-verify=false", "--signature-policy", policyFile, signed); r.code != 0 {
			t.Fatalf("inspect of the signed image: exit %d", r.code)
		}
		if r := migrate(t, "inspect", "--tls-verify=false", "--signature-policy", policyFile, unsigned); r.code != 5 {
			t.Fatalf("inspect of the unsigned image: exit %d, want 5", r.code)
		}
	})

	rmB(t, dst)
	r := migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--signature-policy", policyFile, "--name", dst, signed)
	if r.code != 0 {
		t.Fatalf("pull of the signed image failed: %s", r.stderr)
	}
	checkContinued(t, hosts.HostBURL, dst, before)
}

// TestSignedPod: a pod pushed with a sigstore key and an encryption key
// has every member encrypted, and its index and every member signed (the
// record names the encrypted members); B pulls it under a policy that
// requires the key, with the decryption key, and the pod carries on
// there. Without the decryption key, or copied without its signatures, it
// is refused before anything is made on B.
func TestSignedPod(t *testing.T) {
	sigstoreAttachments(t)
	dir := t.TempDir()
	priv, pub, pass := sigstoreKeys(t, dir, "pod")
	encPub, encPriv := rsaKeyPair(t, dir, "pod-enc")
	policy := fmt.Sprintf(`{"default":[{"type":"insecureAcceptAnything"}],
 "transports":{"docker":{%q:[{"type":"sigstoreSigned","keyPath":%q,"signedIdentity":{"type":"matchRepository"}}]}}}`, hosts.Registry, pub)
	policyFile := writeFile(t, filepath.Join(dir, "policy.json"), []byte(policy))

	const pod = "e2e-signed-pod"
	portA, portB := freePort(t), freePort(t)
	srv, cli := startTalkingPod(t, hosts.HostAURL, pod, portA)
	r := migrate(t, "--url", hosts.HostAURL, "push", "--tls-verify=false", "--format", "json", "--encryption-key", "jwe:"+encPub,
		"--sign-by-sigstore-private-key", priv, "--sign-passphrase-file", pass, pod, hosts.Registry+"/e2e/signed-pod:v1")
	var pushed struct {
		Reference, Digest string
		Members           []struct{ Digest string }
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &pushed) != nil || len(pushed.Members) != 2 {
		t.Fatalf("signed push of the pod: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	for _, d := range []string{pushed.Digest, pushed.Members[0].Digest, pushed.Members[1].Digest} {
		sigTag := hosts.Registry + "/e2e/signed-pod:" + strings.Replace(d, ":", "-", 1) + ".sig"
		if r := runCmd(t, "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+sigTag); r.code != 0 {
			t.Fatalf("no sigstore attachment %s: %s", sigTag, r.stderr)
		}
	}
	for _, m := range pushed.Members {
		raw := runCmd(t, "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+hosts.Registry+"/e2e/signed-pod@"+m.Digest)
		if raw.code != 0 || !strings.Contains(raw.stdout, "+encrypted") {
			t.Fatalf("member %s is not encrypted: %s%s", m.Digest, raw.stdout, raw.stderr)
		}
	}

	unsigned := hosts.Registry + "/e2e/unsigned-pod:v1"
	if r := runCmd(t, "skopeo", "copy", "--all", "--preserve-digests", "--remove-signatures", "--src-tls-verify=false", "--dest-tls-verify=false",
		"docker://"+hosts.Registry+"/e2e/signed-pod@"+pushed.Digest, "docker://"+unsigned); r.code != 0 {
		t.Fatalf("skopeo copy of the index without signatures: %s", r.stderr)
	}
	unchanged := unchangedOnB(t)
	r = migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--signature-policy", policyFile, "--decryption-key", encPriv, "--name", pod+"-refused", unsigned+"@"+pushed.Digest)
	if r.code != 5 || !strings.Contains(r.stderr, "A signature was required, but no signature exists") {
		t.Fatalf("pull of the unsigned pod: exit %d: %s", r.code, r.stderr)
	}
	r = migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--signature-policy", policyFile, pushed.Reference+"@"+pushed.Digest)
	if r.code == 0 || !strings.Contains(r.stderr, "--decryption-key") {
		t.Fatalf("pull of the encrypted pod without the key: exit %d: %s", r.code, r.stderr)
	}
	unchanged()

	r = migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--signature-policy", policyFile, "--decryption-key", encPriv, "--publish", fmt.Sprintf("%d:8080", portB), pushed.Reference+"@"+pushed.Digest)
	t.Cleanup(func() { podmanTry(t, hosts.HostBURL, "pod", "rm", "-f", "-t", "0", pod) })
	if r.code != 0 {
		t.Fatalf("pull of the signed pod under the policy: exit %d: %s", r.code, r.stderr)
	}
	checkTalkingPod(t, hosts.HostBURL, pod, portB, srv, cli)
}
