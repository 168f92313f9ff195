package main

import (
	"errors"
	"fmt"

	"github.com/containers/image/v5/signature"
	encconfig "github.com/containers/ocicrypt/config"
	"github.com/spf13/pflag"

	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

// sealFlags are push's and move's flags for encrypting and signing the
// image, named as podman push names them.
type sealFlags struct {
	encryptionKeys []string
	encryptLayers  []int
	signKey        string
	passphraseFile string
	// What check read.
	encrypt    *encconfig.EncryptConfig
	passphrase []byte
}

// addSealFlags registers the seal group: push and move.
func addSealFlags(f *pflag.FlagSet) *sealFlags {
	s := &sealFlags{}
	f.StringArrayVar(&s.encryptionKeys, "encryption-key", nil, "encrypt the image's layers for this recipient: PROTOCOL:KEY, e.g. jwe:/path/to/pubkey.pem (also pkcs7:CERT, pgp:ID, pkcs11:FILE, provider:NAME; repeatable)")
	f.IntSliceVar(&s.encryptLayers, "encrypt-layer", nil, "encrypt only these layers: 0-indexed, negative from the end (0 is the metadata layer, -1 the last); repeatable (default: all layers)")
	f.StringVar(&s.signKey, "sign-by-sigstore-private-key", "", "sign the image with this sigstore private key (the registry needs use-sigstore-attachments in registries.d)")
	f.StringVar(&s.passphraseFile, "sign-passphrase-file", "", "read the signing key's passphrase from the first line of this file (default: an empty passphrase; push never prompts)")
	return s
}

// check reads the keys and checks them, before anything is checkpointed,
// for a push to dest.
func (s *sealFlags) check(dest string) error {
	if len(s.encryptLayers) > 0 && len(s.encryptionKeys) == 0 {
		return usageError{errors.New("--encrypt-layer needs --encryption-key")}
	}
	if s.signKey != "" {
		// Only a registry (with sigstore attachments) keeps signatures.
		if ref, err := transfer.ParseReference(dest); err == nil && !transfer.IsRegistry(ref) {
			return usageError{fmt.Errorf("--sign-by-sigstore-private-key needs a registry destination, not %s", transfer.Display(ref))}
		}
	}
	var err error
	if s.encrypt, err = transfer.EncryptionConfig(s.encryptionKeys); err != nil {
		return err
	}
	s.passphrase, err = transfer.SigningPassphrase(s.signKey, s.passphraseFile)
	return err
}

// fill makes o encrypt and sign as check found.
func (s *sealFlags) fill(o *transfer.Options) {
	o.Encrypt, o.EncryptLayers = s.encrypt, s.encryptLayers
	o.SignBySigstoreKey, o.SignPassphrase = s.signKey, s.passphrase
}

// trustFlags are pull's, move's and inspect's flags for encrypted and
// signed images.
type trustFlags struct {
	decryptionKeys []string
	policy         string
	decrypt        *encconfig.DecryptConfig // what check read
}

// addTrustFlags registers the trust group: pull, move and inspect.
func addTrustFlags(f *pflag.FlagSet) *trustFlags {
	t := &trustFlags{}
	f.StringArrayVar(&t.decryptionKeys, "decryption-key", nil, "private key that decrypts an encrypted image: FILE[:PASSPHRASE] (repeatable); an encrypted image is fetched whole before planning")
	f.StringVar(&t.policy, "signature-policy", "", "signature policy file to use instead of the system's policy.json")
	return t
}

// check reads the keys and the policy, before anything is fetched.
func (t *trustFlags) check() error {
	if t.policy != "" {
		if _, err := signature.NewPolicyFromFile(t.policy); err != nil {
			return usageError{fmt.Errorf("--signature-policy %s: %w", t.policy, err)}
		}
	}
	var err error
	t.decrypt, err = transfer.DecryptionConfig(t.decryptionKeys)
	return err
}

// fill makes o decrypt and check signatures as check found.
func (t *trustFlags) fill(o *transfer.Options) {
	o.Decrypt, o.SignaturePolicy = t.decrypt, t.policy
}
