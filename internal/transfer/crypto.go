package transfer

// A checkpoint is a full copy of a process's memory, secrets included:
// these are the keys that encrypt it on the way (ocicrypt, parsed as
// podman push/pull parse --encryption-key and --decryption-key) and sign
// it (sigstore, as podman push --sign-by-sigstore-private-key). The
// encryption itself is containers/image's: Copy hands these to copy.Image.

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/containers/image/v5/image"
	"github.com/containers/image/v5/manifest"
	"github.com/containers/image/v5/pkg/cli"
	"github.com/containers/image/v5/signature"
	"github.com/containers/image/v5/signature/sigstore"
	"github.com/containers/image/v5/types"
	"github.com/containers/ocicrypt"
	encconfig "github.com/containers/ocicrypt/config"
	enchelpers "github.com/containers/ocicrypt/helpers"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/podman-migrate/podman-migrate/internal/fault"
)

// ErrKey is matched (errors.Is) by every KeyError: a key the user gave, or
// did not give, keeps the image from being encrypted, decrypted or signed.
// It is bad input.
var ErrKey = fault.New(fault.Input, "key cannot be used")

// KeyError is a problem with the keys given by one flag.
type KeyError struct {
	Flag string // "--decryption-key", …
	Key  string // the key file ("" when the problem is a missing key); never a passphrase
	Err  error
}

func (e *KeyError) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("%s: %v", e.Flag, e.Err)
	}
	return fmt.Sprintf("%s %s: %v", e.Flag, e.Key, e.Err)
}

func (e *KeyError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrKey) true for every KeyError.
func (e *KeyError) Is(target error) bool { return target == ErrKey }

// Kind is fault.Input: ErrKey's, which e matches without wrapping it.
func (e *KeyError) Kind() fault.Kind { return fault.Input }

// encryptionProtocols are the PROTOCOL parts ocicrypt understands.
var encryptionProtocols = []string{"jwe", "pkcs7", "pgp", "pkcs11", "provider"}

// EncryptionConfig turns push's --encryption-key PROTOCOL:KEY values into
// the config copy.Image encrypts with; nil when no key is given. Each key
// is checked on its own, so the error names the one that is wrong.
func EncryptionConfig(keys []string) (*encconfig.EncryptConfig, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	var ccs []encconfig.CryptoConfig
	for _, k := range keys {
		fail := func(err error) (*encconfig.EncryptConfig, error) {
			return nil, &KeyError{Flag: "--encryption-key", Key: k, Err: err}
		}
		proto, _, ok := strings.Cut(k, ":")
		if !ok || !slices.Contains(encryptionProtocols, proto) {
			return fail(fmt.Errorf("want PROTOCOL:KEY, PROTOCOL one of %s (e.g. jwe:/path/to/pubkey.pem)", strings.Join(encryptionProtocols, ", ")))
		}
		cc, err := enchelpers.CreateCryptoConfig([]string{k}, nil)
		if err != nil {
			return fail(oneLine(err))
		}
		// ocicrypt drops a pgp: recipient silently when gpg is missing.
		if cc.EncryptConfig == nil || len(cc.EncryptConfig.Parameters) == 0 {
			return fail(errors.New("gives no recipient (pgp: needs gpg installed, with the recipient's key in its key ring)"))
		}
		ccs = append(ccs, cc)
	}
	return encconfig.CombineCryptoConfigs(ccs).EncryptConfig, nil
}

// DecryptionConfig turns pull's --decryption-key FILE[:PASSPHRASE] values
// into the config copy.Image decrypts with; nil when no key is given. The
// passphrase takes ocicrypt's forms: PASS, pass=PASS, file=FILE, fd=N.
func DecryptionConfig(keys []string) (*encconfig.DecryptConfig, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	var ccs []encconfig.CryptoConfig
	for _, k := range keys {
		// ocicrypt's own split; the passphrase never goes into a message.
		file := strings.Split(k, ":")[0]
		fail := func(err error) (*encconfig.DecryptConfig, error) {
			return nil, &KeyError{Flag: "--decryption-key", Key: file, Err: err}
		}
		cc, err := enchelpers.CreateDecryptCryptoConfig([]string{k}, nil)
		if err != nil {
			return fail(oneLine(err))
		}
		// ocicrypt skips a file it does not recognise; say so instead.
		if cc.DecryptConfig == nil || len(cc.DecryptConfig.Parameters) == 0 {
			if strings.Contains(k, ":") && encryptedPEM(file) {
				// A wrong passphrase on a legacy encrypted PEM block is
				// caught by its padding check only most of the time (about
				// 255 in 256); else it decrypts to bytes that parse as no key.
				return fail(errors.New("wrong password for the encrypted private key (or not a private key)"))
			}
			return fail(errors.New("not a private key (PEM, DER or JWK, or a GPG secret key ring)"))
		}
		ccs = append(ccs, cc)
	}
	return encconfig.CombineCryptoConfigs(ccs).DecryptConfig, nil
}

// encryptedPEM says whether file holds a passphrase-protected PEM key.
func encryptedPEM(file string) bool {
	f, err := os.Open(file)
	if err != nil {
		return false
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, 1<<20))
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			return false
		}
		if blk.Type == "ENCRYPTED PRIVATE KEY" || blk.Headers["Proc-Type"] == "4,ENCRYPTED" {
			return true
		}
	}
}

// SigningPassphrase reads --sign-passphrase-file (its first line, as
// podman does) and checks, before anything is checkpointed, that it opens
// the --sign-by-sigstore-private-key key. Without a passphrase file the
// key must have an empty passphrase: push never prompts.
func SigningPassphrase(keyFile, passphraseFile string) ([]byte, error) {
	if keyFile == "" {
		if passphraseFile != "" {
			return nil, &KeyError{Flag: "--sign-passphrase-file", Key: passphraseFile, Err: errors.New("needs --sign-by-sigstore-private-key")}
		}
		return nil, nil
	}
	p, err := cli.ReadPassphraseFile(passphraseFile)
	if err != nil {
		return nil, &KeyError{Flag: "--sign-passphrase-file", Key: passphraseFile, Err: err}
	}
	s, err := sigstore.NewSigner(sigstore.WithPrivateKeyFile(keyFile, []byte(p)))
	if err != nil {
		if _, serr := os.Stat(keyFile); serr == nil {
			err = fmt.Errorf("%w (a wrong passphrase? give it with --sign-passphrase-file)", err)
		}
		return nil, &KeyError{Flag: "--sign-by-sigstore-private-key", Key: keyFile, Err: err}
	}
	_ = s.Close()
	return []byte(p), nil
}

// CheckDecryption reads the manifest of the image src holds and returns it
// and whether any layer is encrypted. For an encrypted image it checks,
// before any layer is fetched, that dc opens every encrypted layer:
// ocicrypt unwraps each layer's key from its annotations alone.
func CheckDecryption(ctx context.Context, src types.ImageSource, dc *encconfig.DecryptConfig) ([]byte, bool, error) {
	mb, mt, err := image.UnparsedInstance(src, nil).Manifest(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("reading the manifest: %w", err)
	}
	if manifest.MIMETypeIsMultiImage(mt) {
		return mb, false, nil // not a checkpoint image; the caller says so
	}
	m, err := manifest.FromBlob(mb, manifest.NormalizedMIMEType(mt))
	if err != nil {
		return mb, false, nil // the same
	}
	var encrypted []int
	for i, l := range m.LayerInfos() {
		if strings.HasSuffix(l.MediaType, "+encrypted") {
			encrypted = append(encrypted, i)
		}
	}
	if len(encrypted) == 0 {
		return mb, false, nil
	}
	if dc == nil {
		return mb, true, &KeyError{Flag: "--decryption-key", Err: fmt.Errorf("layers %v of the image are encrypted and no key was given: give the private key with --decryption-key FILE[:PASSPHRASE]", encrypted)}
	}
	layers := m.LayerInfos()
	for _, i := range encrypted {
		l := layers[i]
		desc := imgspecv1.Descriptor{MediaType: l.MediaType, Digest: l.Digest, Size: l.Size, Annotations: l.Annotations}
		if _, _, err := ocicrypt.DecryptLayer(dc, nil, desc, true); err != nil {
			return mb, true, &KeyError{Flag: "--decryption-key", Err: fmt.Errorf("none of the keys given opens encrypted layer %d (%s): %w", i, l.Digest, oneLine(err))}
		}
	}
	return mb, true, nil
}

// policyRefusal makes a refusal by the signature policy recognisable as
// one: sigstoreSigned passes a bad signature's own error through (a key
// mismatch is no PolicyRequirementError), which would read as a transport
// failure.
func policyRefusal(err error) error {
	var pre signature.PolicyRequirementError
	if err == nil || errors.As(err, &pre) {
		return err
	}
	return fmt.Errorf("%w: %w", signature.PolicyRequirementError("rejected by the signature policy"), err)
}

// oneLine keeps an error on one line: ocicrypt joins the reasons each key
// failed with newlines (and starts some with an empty prefix's ": "), and
// failures print as one Error: line.
func oneLine(err error) error {
	msg := strings.TrimLeft(strings.TrimSpace(err.Error()), ": ")
	if msg == err.Error() {
		return err
	}
	var lines []string
	for _, l := range strings.Split(msg, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return errors.New(strings.ReplaceAll(strings.Join(lines, "; "), ":; ", ": "))
}
