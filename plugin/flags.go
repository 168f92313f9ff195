package main

// Flag groups. Each flag is declared once, with one help text, in the group
// that owns it, and every command that takes the flag registers the group:
// the shape of skopeo's sharedImageOptions and imageFlags. A group is a
// struct, an add… constructor that registers its flags on a FlagSet, and a
// fill method that sets the fields of the options the command builds, so
// that push, pull and move cannot drift apart again (TestMoveHasPushAndPullFlags).
//
//	push:    checkpoint, image, seal, registry, staging, output; --leave-running
//	pull:    restore, relocation, trust, limits, registry, staging, output; --dry-run
//	move:    checkpoint, image, seal, restore, relocation, trust, limits,
//	         registry, staging, output; --from, --to, --to-identity, --via, --parallel
//	inspect: registry (without --retry), trust, limits, output
//	kube:    registry (without --retry), limits
//	check, version: output
//
// The seal and trust groups are in security.go, limits in limits.go.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/template"
	"time"

	"github.com/spf13/pflag"

	"github.com/podman-migrate/podman-migrate/export"
	restore "github.com/podman-migrate/podman-migrate/import"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

// defaultCRIUTimeout bounds a checkpoint or restore: CRIU < 4.2 hangs
// forever on VM guests whose hardware breakpoints never fire.
const defaultCRIUTimeout = 10 * time.Minute

// registryFlags are how registries are reached: --tls-verify, --authfile,
// and podman push's and pull's --retry and --retry-delay.
type registryFlags struct {
	tlsVerify bool
	// tlsFlag.Changed tells an explicit --tls-verify from the default:
	// when it was not given, registries.conf decides.
	tlsFlag    *pflag.Flag
	authFile   string
	retry      bool // --retry and --retry-delay were registered
	retries    int
	retryDelay time.Duration
}

// addRegistryFlags registers the registry group: push, pull and move.
func addRegistryFlags(f *pflag.FlagSet) *registryFlags {
	r := addRegistryAuthFlags(f)
	r.retry = true
	f.IntVar(&r.retries, "retry", transfer.DefaultRetries, "retry a transient registry failure (connection reset, HTTP 5xx, 429) this many times")
	f.DurationVar(&r.retryDelay, "retry-delay", 0, "pause between retries (default: exponential backoff from 2s)")
	return r
}

// addRegistryAuthFlags registers --tls-verify and --authfile only: inspect
// and kube read a few small blobs, and keep transfer's default retries.
func addRegistryAuthFlags(f *pflag.FlagSet) *registryFlags {
	r := &registryFlags{}
	f.BoolVar(&r.tlsVerify, "tls-verify", true, "require HTTPS and verify certificates when talking to the registry")
	r.tlsFlag = f.Lookup("tls-verify")
	f.StringVar(&r.authFile, "authfile", "", "path of the authentication file (default: podman login's)")
	return r
}

// fill sets how o reaches registries.
func (r *registryFlags) fill(o *transfer.Options) {
	o.TLSVerify = transfer.TLSVerify(r.tlsFlag.Changed, r.tlsVerify)
	o.AuthFile = r.authFile
	o.UserAgent = "podman-migrate/" + Version
	if r.retry {
		o.Retries, o.RetryDelay = r.retries, r.retryDelay
		if r.retries == 0 {
			o.Retries = -1 // --retry 0: never (transfer's 0 is its default)
		}
	}
}

// tcpCloseUsage is --tcp-close's help, the same for push, pull and move.
const tcpCloseUsage = "have TCP connections closed on restore, as connections to peers that do not move must be: push checkpoints them, lets a pod's connections to outside peers through, and records the choice in the image; pull (any image) restores them closed, by podman 5.7's tcpClose, else by a CRIU configuration runc reads (the service on this machine)"

// checkpointFlags are how the source container is checkpointed.
type checkpointFlags struct {
	tcpEstablished bool
	tcpClose       bool
	fileLocks      bool
	ignoreRootfs   bool
	timeout        time.Duration
}

// addCheckpointFlags registers the checkpoint group: push and move.
func addCheckpointFlags(f *pflag.FlagSet) *checkpointFlags {
	c := &checkpointFlags{}
	f.BoolVar(&c.tcpEstablished, "tcp-established", false, "checkpoint established TCP connections")
	f.BoolVar(&c.tcpClose, "tcp-close", false, tcpCloseUsage)
	f.BoolVar(&c.fileLocks, "file-locks", false, "checkpoint file locks")
	f.BoolVar(&c.ignoreRootfs, "ignore-rootfs", false, "leave root file-system changes out of the image")
	f.DurationVar(&c.timeout, "checkpoint-timeout", defaultCRIUTimeout,
		"bound the wait for podman's checkpoint (0: none); then CRIU is ended when the service is on this machine (else the error names the command to run there), the container resumes, and the exit code is 3")
	return c
}

// fill sets the checkpoint options of o.
func (c *checkpointFlags) fill(o *export.PushOptions) {
	o.TCPEstablished, o.FileLocks, o.IgnoreRootfs = c.tcpEstablished || c.tcpClose, c.fileLocks, c.ignoreRootfs
	o.TCPClose = c.tcpClose
	o.CheckpointTimeout = c.timeout
}

// imageFlags are how the checkpoint becomes an image.
type imageFlags struct {
	compression string
	level       int
	levelFlag   *pflag.Flag // not Changed: the library's default level
	includeBase bool
	noCRIO      bool
	stream      bool
}

// addImageFlags registers the image group: push and move.
func addImageFlags(f *pflag.FlagSet) *imageFlags {
	i := &imageFlags{}
	f.StringVar(&i.compression, "compression-format", "zstd", "layer compression: zstd or gzip")
	f.IntVar(&i.level, "compression-level", 0, "compression level (zstd 1-20, gzip 1-9; default: the library's, zstd 3)")
	i.levelFlag = f.Lookup("compression-level")
	f.BoolVar(&i.includeBase, "include-base", false, "also copy the container's base image into the image's repository (push: DEST's, move: --via's; tag base-IMAGEID), for targets that cannot pull it from its origin; registry destinations only")
	f.BoolVar(&i.noCRIO, "no-cri-o-annotations", false, "leave out what CRI-O needs to restore the image (its manifest annotation, spec.dump's io.kubernetes.cri-o.Annotations, config.dump's rootfsImageRef)")
	f.BoolVar(&i.stream, "stream-layers", true, "upload the CRIU layer to a registry while it is built; false stages the whole image first")
	return i
}

// fill sets the image options of o.
func (i *imageFlags) fill(o *export.PushOptions) {
	o.Compression = i.compression
	o.CompressionLevel = nil
	if i.levelFlag.Changed {
		level := i.level
		o.CompressionLevel = &level
	}
	o.IncludeBase, o.NoCRIOAnnotations, o.NoStream = i.includeBase, i.noCRIO, !i.stream
}

// restoreFlags are how the new container is made on the target.
type restoreFlags struct {
	name            string
	publish         []string
	pod             string
	ignoreStaticIP  bool
	ignoreStaticMAC bool
	allowPrivileged bool
	timeout         time.Duration
	compress        string
	tcpClose        bool // pull's --tcp-close; move's is a checkpoint flag
}

// addRestoreFlags registers the restore group: pull and move.
func addRestoreFlags(f *pflag.FlagSet) *restoreFlags {
	r := &restoreFlags{}
	f.StringVarP(&r.name, "name", "n", "", "name of the new container (default: the checkpointed container's name; move: one container only)")
	f.StringArrayVarP(&r.publish, "publish", "p", nil, "publish a port, as podman run -p (repeatable; replaces the checkpoint's; move: one container only)")
	f.StringVar(&r.pod, "pod", "", "restore into this existing pod")
	f.BoolVar(&r.ignoreStaticIP, "ignore-static-ip", false, "let podman choose a new IP address")
	f.BoolVar(&r.ignoreStaticMAC, "ignore-static-mac", false, "let podman choose a new MAC address")
	f.BoolVar(&r.allowPrivileged, "allow-privileged", false, "restore a checkpoint that asks for more than an ordinary container (privileged mode, host namespaces, devices, capabilities, hooks, runtime annotations)")
	f.DurationVar(&r.timeout, "restore-timeout", defaultCRIUTimeout,
		"bound podman's restore (0: none); then CRIU is ended when the service is on this machine, the half-made container is removed, and the exit code is 3")
	f.StringVar(&r.compress, "compress", "auto", "compression of the archive sent to the target's podman: auto (to a tcp:// or ssh:// service, a zstd stream whose frames are compressed where measured to pay; none to a unix socket), none, zstd, zstd:LEVEL")
	return r
}

// perContainer reports whether a flag that names one container was given.
func (r *restoreFlags) perContainer() bool { return r.name != "" || len(r.publish) > 0 }

// fill sets the restore options of o.
func (r *restoreFlags) fill(o *restore.PullOptions) {
	o.Name, o.Publish, o.Pod = r.name, r.publish, r.pod
	o.IgnoreStaticIP, o.IgnoreStaticMAC = r.ignoreStaticIP, r.ignoreStaticMAC
	o.AllowPrivileged = r.allowPrivileged
	o.RestoreTimeout = r.timeout
	o.Compress = r.compress
	o.TCPClose = r.tcpClose
}

// check refuses a --compress that would only fail after the checkpoint.
func (r *restoreFlags) check() error {
	if _, err := restore.ChooseWire(r.compress, ""); err != nil {
		return usageError{err}
	}
	return nil
}

// relocationFlags map what the target has elsewhere or by another name.
type relocationFlags struct {
	mountMap   []string
	volumeMap  []string
	networkMap []string
}

// addRelocationFlags registers the relocation group: pull and move.
func addRelocationFlags(f *pflag.FlagSet) *relocationFlags {
	r := &relocationFlags{}
	f.StringArrayVar(&r.mountMap, "mount-map", nil, "relocate bind mounts: SRC on the checkpointed host, or a path below it, is DST on the restoring one: SRC=DST (repeatable)")
	f.StringArrayVar(&r.volumeMap, "volume-map", nil, "restore named volume OLD as NEW: OLD=NEW (repeatable)")
	f.StringArrayVar(&r.networkMap, "network-map", nil, "attach to network NEW where the container was on OLD: OLD=NEW (repeatable)")
	return r
}

// fill sets the maps of o.
func (r *relocationFlags) fill(o *restore.PullOptions) {
	o.MountMap, o.VolumeMap, o.NetworkMap = r.mountMap, r.volumeMap, r.networkMap
}

// stagingFlags are where images wait on this machine; the commands set
// PushOptions.TmpDir and PullOptions.TmpDir from dir.
type stagingFlags struct{ dir string }

// addStagingFlags registers --tmpdir: push, pull and move.
func addStagingFlags(f *pflag.FlagSet) *stagingFlags {
	s := &stagingFlags{}
	f.StringVar(&s.dir, "tmpdir", "", "staging directory for the image (default $TMPDIR, else /var/tmp); needs room for the container's memory. move without --via stages nothing but a /dev/shm copy larger than 8 MiB")
	return s
}

// outputFlags are --format: text, json, or a Go template, as podman's.
type outputFlags struct {
	format string
	tmpl   *template.Template // when --format is a template: what check parsed
}

// addOutputFlags registers --format: every command that prints a result.
func addOutputFlags(f *pflag.FlagSet) *outputFlags {
	o := &outputFlags{}
	f.StringVar(&o.format, "format", "text", "output: text, json, or a Go template run on the result as podman's --format runs one, e.g. '{{json .}}' (the man page names the fields)")
	return o
}

// templateFuncs are podman's own template functions that make sense here.
var templateFuncs = template.FuncMap{
	// json is compact and on one line, as podman's: '{{json .Seconds}}'.
	"json": func(v any) (string, error) {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			return "", err
		}
		return strings.TrimSuffix(b.String(), "\n"), nil
	},
	"join":  strings.Join,
	"lower": strings.ToLower,
	"upper": strings.ToUpper,
}

// check reads --format before anything runs, so that a mistake costs no
// checkpoint. sample, when not nil, is a zero value of what will be
// printed: a template that names a field it lacks is refused too.
func (o *outputFlags) check(sample any) error {
	return o.checkAny(sample)
}

// checkAny is check for a command that prints one of several results,
// known only once SOURCE is read (a container's or a pod's): a field
// that none of them has is refused.
func (o *outputFlags) checkAny(samples ...any) error {
	o.tmpl = nil
	switch {
	case o.format == "text" || o.format == "json":
		return nil
	case !strings.Contains(o.format, "{{"):
		// Podman would print such a "template" as it is; a typo of json
		// (or yaml) is likelier.
		return usageError{fmt.Errorf("--format %q: want text or json, or a Go template such as '{{json .}}'", o.format)}
	}
	t, err := template.New("format").Funcs(templateFuncs).Parse(normalizeTemplate(o.format))
	if err != nil {
		return usageError{fmt.Errorf("--format %q: %w", o.format, err)}
	}
	var missing error
	for _, sample := range samples {
		if sample == nil {
			continue
		}
		// Only a missing field is certain: a nil pointer or an empty map
		// in the zero value says nothing of the real result.
		err := t.Execute(io.Discard, sample)
		if err == nil || !strings.Contains(err.Error(), "can't evaluate field") {
			missing = nil
			break
		}
		missing = err
	}
	if missing != nil {
		return usageError{fmt.Errorf("--format %q: %w", o.format, missing)}
	}
	o.tmpl = t
	return nil
}

// text reports whether the command prints its own text.
func (o *outputFlags) text() bool { return o.format == "text" }

// write prints v, the value --format json encodes, as JSON or through the
// template. A failed template prints nothing.
func (o *outputFlags) write(w io.Writer, v any) error {
	if o.tmpl == nil {
		return writeJSON(w, v)
	}
	var b bytes.Buffer
	if err := o.tmpl.Execute(&b, v); err != nil {
		return fmt.Errorf("--format: %w", err)
	}
	_, err := w.Write(b.Bytes())
	return err
}

// normalizeTemplate does to a --format template what podman does: \t and
// \n typed in a shell become a tab and a newline (here only outside
// actions, where they cannot be part of a Go string), and a newline ends
// the output if the template does not end with one.
func normalizeTemplate(s string) string {
	escapes := strings.NewReplacer(`\t`, "\t", `\n`, "\n")
	var b strings.Builder
	for s != "" {
		open := strings.Index(s, "{{")
		if open < 0 {
			b.WriteString(escapes.Replace(s))
			break
		}
		b.WriteString(escapes.Replace(s[:open]))
		s = s[open:]
		end := strings.Index(s, "}}")
		if end < 0 {
			b.WriteString(s) // unclosed: Parse says so
			break
		}
		b.WriteString(s[:end+2])
		s = s[end+2:]
	}
	out := b.String()
	if !strings.HasSuffix(out, "\n") {
		out += "\n"
	}
	return out
}

// writeJSON prints one JSON document: what --format json promises.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
