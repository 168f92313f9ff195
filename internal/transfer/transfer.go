// Package transfer moves images between a local OCI layout and any
// containers/image transport. Every transfer goes through copy.Image, so
// digests are verified, policy.json applies, and podman's credentials,
// registries.conf and certs.d are honoured.
package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/containers/image/v5/copy"
	"github.com/containers/image/v5/docker"
	"github.com/containers/image/v5/docker/reference"
	"github.com/containers/image/v5/image"
	"github.com/containers/image/v5/manifest"
	"github.com/containers/image/v5/signature"
	"github.com/containers/image/v5/transports"
	"github.com/containers/image/v5/transports/alltransports"
	"github.com/containers/image/v5/types"
	encconfig "github.com/containers/ocicrypt/config"
	"github.com/docker/distribution/registry/api/errcode"
	"github.com/opencontainers/go-digest"

	"github.com/podman-migrate/podman-migrate/internal/fault"
)

// ErrBadReference is wrapped when a reference cannot be parsed.
var ErrBadReference = fault.New(fault.Input, "invalid image reference")

// Error is a failure in reaching or using the other side of a transfer
// (a registry, or a local layout or archive).
type Error struct {
	Op  string // "pushing", "pulling"
	Ref string
	Err error
}

func (e *Error) Error() string {
	return fmt.Sprintf("registry: %s %s: %v", e.Op, e.Ref, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Kind is fault.Registry (exit 4), unless what it wraps is of a higher
// kind: classify made a policy refusal or a digest mismatch bad input.
func (e *Error) Kind() fault.Kind { return fault.Registry }

// registryHint is what to look at when the other side cannot be used.
const registryHint = "check the reference, that the registry is reachable, `podman login` for credentials, and --tls-verify=false for a plain-HTTP registry"

// Hint is the fix: the cause's own (the policy, a tampered blob), else what
// to check of the registry. A cause of this machine's (no space, no
// permission) is left to the CLI's hint for it.
func (e *Error) Hint() string {
	if h := fault.HintOf(e.Err); h != "" {
		return h
	}
	if errors.Is(e.Err, syscall.ENOSPC) || errors.Is(e.Err, os.ErrPermission) {
		return ""
	}
	return registryHint
}

// ParseReference parses a destination or source as users write it: a
// registry reference (host[:port]/repo[:tag|@digest]) or any containers/image
// transport ("docker://…", "oci:DIR:TAG", "oci-archive:FILE", "dir:DIR").
func ParseReference(s string) (types.ImageReference, error) {
	if s == "" {
		return nil, fmt.Errorf("%w: empty", ErrBadReference)
	}
	if name, _, ok := strings.Cut(s, ":"); ok && transports.Get(name) != nil {
		// Other transports read this machine's own stores or files
		// (containers-storage:, tarball:, docker-daemon:): not a place a
		// checkpoint travels through.
		switch name {
		case "docker", "oci", "oci-archive", "dir", "docker-archive":
		default:
			return nil, fmt.Errorf("%w %q: transport %s is not supported; use a registry reference, docker://, oci:, oci-archive:, docker-archive: or dir:", ErrBadReference, s, name)
		}
		ref, err := alltransports.ParseImageName(s)
		if err != nil {
			return nil, fmt.Errorf("%w %q: %w", ErrBadReference, s, err)
		}
		return ref, nil
	}
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %w", ErrBadReference, s, err)
	}
	// A short name would silently mean Docker Hub; make the user say which
	// registry instead.
	if reference.Domain(named) == "docker.io" && !strings.HasPrefix(s, "docker.io/") {
		return nil, fmt.Errorf("%w %q: name a registry (host[:port]/repo:tag) or a transport (oci:DIR:TAG, docker://…)", ErrBadReference, s)
	}
	// push prints REF:TAG@DIGEST; the digest pins the image, and
	// containers/image refuses a reference with both.
	if canonical, ok := named.(reference.Canonical); ok {
		if _, tagged := named.(reference.NamedTagged); tagged {
			if named, err = reference.WithDigest(reference.TrimNamed(named), canonical.Digest()); err != nil {
				return nil, fmt.Errorf("%w %q: %w", ErrBadReference, s, err)
			}
		}
	}
	ref, err := docker.NewReference(reference.TagNameOnly(named))
	if err != nil {
		return nil, fmt.Errorf("%w %q: %w", ErrBadReference, s, err)
	}
	return ref, nil
}

// Display returns how a reference is shown to users: a registry reference
// without the "docker://" prefix, anything else as "transport:reference".
func Display(ref types.ImageReference) string {
	if ref.Transport().Name() == docker.Transport.Name() && ref.DockerReference() != nil {
		return ref.DockerReference().String()
	}
	return strings.TrimSuffix(transports.ImageName(ref), ":")
}

// Options are the user's settings for talking to registries.
type Options struct {
	// TLSVerify overrides registries.conf when not OptionalBoolUndefined.
	TLSVerify types.OptionalBool
	AuthFile  string
	// Report receives copy.Image's progress (stderr); nil discards it.
	Report io.Writer
	// UserAgent is sent to registries.
	UserAgent string
	// SignaturePolicy is a policy.json to use instead of the system's.
	SignaturePolicy string
	// Retries is how often a transient failure is retried (0: the
	// default, DefaultRetries; negative: never); RetryDelay is the pause
	// between tries (0: exponential backoff from 2 s, as podman's).
	Retries    int
	RetryDelay time.Duration
	// Again, when set, is asked before each retry; false ends the copy
	// with its error (a destination that cannot take the image twice).
	Again func() bool
	// Encrypt encrypts the layers EncryptLayers names (nil: all of them;
	// 0 is the first, -1 the last) of what Copy writes (crypto.go).
	Encrypt       *encconfig.EncryptConfig
	EncryptLayers []int
	// Decrypt decrypts encrypted layers while Copy reads them.
	Decrypt *encconfig.DecryptConfig
	// SignBySigstoreKey signs what Copy writes with this sigstore private
	// key file, opened with SignPassphrase.
	SignBySigstoreKey string
	SignPassphrase    []byte
	// AllImages copies every image of an index (a pod's), not only the
	// one for this machine's platform.
	AllImages bool
	// Sent, when set, collects the blobs Copy read from the source and
	// wrote, as opposed to those the destination already had.
	Sent *Blobs
	// BlobInfoCacheDir, when set, keeps containers/image's record of
	// blobs there instead of the system's (shared with podman): for
	// copies between staging layouts, whose records would only confuse it.
	BlobInfoCacheDir string
}

// SystemContext returns the containers/image settings for these options.
func (o Options) SystemContext() *types.SystemContext {
	sys := &types.SystemContext{
		AuthFilePath:            o.AuthFile,
		DockerRegistryUserAgent: o.UserAgent,
		SignaturePolicyPath:     o.SignaturePolicy,
		BlobInfoCacheDir:        o.BlobInfoCacheDir,
	}
	if o.TLSVerify != types.OptionalBoolUndefined {
		skip := o.TLSVerify == types.OptionalBoolFalse
		sys.DockerInsecureSkipTLSVerify = types.NewOptionalBool(skip)
		sys.OCIInsecureSkipTLSVerify = skip
		sys.DockerDaemonInsecureSkipTLSVerify = skip
	}
	return sys
}

// Copy copies an image with copy.Image under the system's signature policy
// and returns the digest of the manifest written to dst.
func Copy(ctx context.Context, op string, dst, src types.ImageReference, o Options) (digest.Digest, error) {
	remote := dst
	if op == "pulling" {
		remote = src
	}
	fail := func(err error) (digest.Digest, error) {
		return "", &Error{Op: op, Ref: Display(remote), Err: classify(err)}
	}
	sys := o.SystemContext()
	pc, err := policyContext(sys)
	if err != nil {
		return fail(err)
	}
	defer func() { _ = pc.Destroy() }()
	report := o.Report
	if report == nil {
		report = io.Discard
	}
	dsys := sys
	if op == "pulling" {
		// Staging keeps the image as published: an OCI layout would
		// otherwise compress plain-tar layers, and the manifest fetched
		// would no longer be the one planned.
		d := *sys
		d.OCIAcceptUncompressedLayers = true
		dsys = &d
	}
	copts := &copy.Options{
		ReportWriter:   report,
		SourceCtx:      sys,
		DestinationCtx: dsys,
		// A local layout cannot store signatures; the policy checked them
		// before anything was copied.
		RemoveSignatures:             op == "pulling",
		OciDecryptConfig:             o.Decrypt,
		SignBySigstorePrivateKeyFile: o.SignBySigstoreKey,
	}
	if o.AllImages {
		copts.ImageListSelection = copy.CopyAllImages
	}
	if o.SignBySigstoreKey != "" {
		// copy.Image refuses a nil passphrase; an empty one is a key's own.
		copts.SignSigstorePrivateKeyPassphrase = append([]byte{}, o.SignPassphrase...)
	}
	if o.Encrypt != nil {
		layers := append([]int{}, o.EncryptLayers...) // empty: all layers
		copts.OciEncryptConfig, copts.OciEncryptLayers = o.Encrypt, &layers
	}
	if o.Sent != nil {
		stop := o.Sent.watch(copts)
		defer stop()
	}
	var m []byte
	err = withRetry(ctx, o, func() error {
		var err error
		m, err = copy.Image(ctx, pc, dst, src, copts)
		return classify(err)
	})
	if err != nil {
		return fail(err)
	}
	d, err := manifest.Digest(m)
	if err != nil {
		return fail(err)
	}
	return d, nil
}

func policyContext(sys *types.SystemContext) (*signature.PolicyContext, error) {
	policy, err := signature.DefaultPolicy(sys)
	if err != nil {
		return nil, fmt.Errorf("reading signature policy: %w", err)
	}
	pc, err := signature.NewPolicyContext(policy)
	if err != nil {
		return nil, fmt.Errorf("reading signature policy: %w", err)
	}
	return pc, nil
}

// OpenSource opens an image for reading in place, without copying it, once
// the signature policy accepts it: what inspect and pull --dry-run read
// honours policy.json as a pull does.
func OpenSource(ctx context.Context, ref types.ImageReference, o Options) (types.ImageSource, error) {
	fail := func(err error) (types.ImageSource, error) {
		return nil, &Error{Op: "reading", Ref: Display(ref), Err: classify(err)}
	}
	sys := o.SystemContext()
	pc, err := policyContext(sys)
	if err != nil {
		return fail(err)
	}
	defer func() { _ = pc.Destroy() }()
	var src types.ImageSource
	err = withRetry(ctx, o, func() error {
		var err error
		src, err = ref.NewImageSource(ctx, sys)
		return err
	})
	if err != nil {
		return fail(err)
	}
	unparsed := image.UnparsedInstance(src, nil)
	// A manifest or signatures that cannot be fetched are a transport
	// failure; once they are in hand (cached), any "no" is the policy's.
	if _, _, err = unparsed.Manifest(ctx); err == nil {
		_, err = unparsed.UntrustedSignatures(ctx)
	}
	if err == nil {
		var allowed bool
		allowed, err = pc.IsRunningImageAllowed(ctx, unparsed)
		if err == nil && !allowed {
			err = errors.New("rejected by the signature policy")
		}
		if !allowed {
			err = policyRefusal(err)
		}
	}
	if err != nil {
		src.Close()
		return fail(err)
	}
	return src, nil
}

// Pinned returns ref fixed to manifest digest d where the transport allows
// it (a registry), so a fetch after planning gets the very image planned.
// Other transports come back as they are; callers compare digests.
func Pinned(ref types.ImageReference, d digest.Digest) (types.ImageReference, error) {
	if ref.Transport().Name() != docker.Transport.Name() || ref.DockerReference() == nil {
		return ref, nil
	}
	named, err := reference.WithDigest(reference.TrimNamed(ref.DockerReference()), d)
	if err != nil {
		return nil, err
	}
	return docker.NewReference(named)
}

// SiblingTag returns the image tagged tag in the same registry repository
// as ref.
func SiblingTag(ref types.ImageReference, tag string) (types.ImageReference, error) {
	if !IsRegistry(ref) || ref.DockerReference() == nil {
		return nil, fmt.Errorf("%w: %s is not in a registry", ErrBadReference, Display(ref))
	}
	named, err := reference.WithTag(reference.TrimNamed(ref.DockerReference()), tag)
	if err != nil {
		return nil, err
	}
	return docker.NewReference(named)
}

// WithDigest is the digest reference of the image at ref, as a string
// (host/repo@sha256:…).
func WithDigest(ref types.ImageReference, d digest.Digest) string {
	if ref.DockerReference() == nil {
		return Display(ref) + "@" + d.String()
	}
	return reference.TrimNamed(ref.DockerReference()).String() + "@" + d.String()
}

// IsRegistry reports whether ref names an image in a registry.
func IsRegistry(ref types.ImageReference) bool {
	return ref.Transport().Name() == docker.Transport.Name()
}

// TLSVerify turns a --tls-verify flag into containers/image's tri-state:
// unset leaves the choice to registries.conf.
func TLSVerify(set, value bool) types.OptionalBool {
	if !set {
		return types.OptionalBoolUndefined
	}
	return types.NewOptionalBool(value)
}

// StagingDir is where an image waits between podman and the registry: dir
// if set, else $TMPDIR, else /var/tmp (CRIU images outgrow a tmpfs /tmp).
func StagingDir(dir string) string {
	if dir != "" {
		return dir
	}
	if d := os.Getenv("TMPDIR"); d != "" {
		return d
	}
	return "/var/tmp"
}

// Preflight checks, before anything is checkpointed, that a registry
// destination answers and takes our credentials, so the common mistakes
// (wrong host, TLS, login) cost no downtime. It lists the repository's tags:
// a repository that does not exist yet is fine. Other transports are
// checked by the push itself.
func Preflight(ctx context.Context, ref types.ImageReference, o Options) error {
	if ref.Transport().Name() != docker.Transport.Name() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := retryIf(ctx, o, preflightRetryable, func() error {
		_, err := docker.GetRepositoryTags(ctx, o.SystemContext(), ref)
		return err
	})
	if err == nil || !preflightFatal(err) {
		return nil
	}
	return &Error{Op: "checking", Ref: Display(ref), Err: err}
}

// preflightFatal tells errors that doom a push (no answer, TLS, refused
// credentials) from answers that only mean "no tags here yet".
func preflightFatal(err error) bool {
	var urlErr *url.Error
	var netErr net.Error
	var unauth docker.ErrUnauthorizedForCredentials
	if errors.As(err, &urlErr) || errors.As(err, &netErr) || errors.As(err, &unauth) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	refused := func(c errcode.ErrorCode) bool {
		return c == errcode.ErrorCodeUnauthorized || c == errcode.ErrorCodeDenied
	}
	var ec errcode.Error
	if errors.As(err, &ec) {
		return refused(ec.Code)
	}
	var code errcode.ErrorCode
	if errors.As(err, &code) {
		return refused(code)
	}
	var ecs errcode.Errors
	if errors.As(err, &ecs) {
		for _, e := range ecs {
			if preflightFatal(e) {
				return true
			}
		}
	}
	return false
}
