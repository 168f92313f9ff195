package restore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
)

// How a restore closes the checkpoint's TCP connections (--tcp-close, or
// an image pushed with it): Plan.TCPClose.
const (
	// TCPClosePodman: podman's own restore option tcpClose (podman 5.7).
	TCPClosePodman = "podman"
	// TCPCloseCRIUConfig: the runtime spec's org.criu.config annotation
	// names a CRIU configuration file with tcp-close, written for this
	// restore in the service's mount namespace. runc (and crun >= 1.26
	// with libcriu >= 4.2) hand that file to CRIU; options in it override
	// the runtime's own. Measured on podman 4.3.1 and runc 1.1.5: CRIU reads
	// it ("Parsing config file"), restores each connection as a socket
	// shut down, and binds nothing, so the source's addresses need not
	// exist here.
	TCPCloseCRIUConfig = "criu-config"
)

// tcpCloseSince is the first podman whose restore has tcpClose.
const tcpCloseSince = "5.7.0"

// specAnnCRIUConfig names the CRIU configuration file runc passes to
// CRIU for this container, in place of /etc/criu/runc.conf.
const specAnnCRIUConfig = "org.criu.config"

// criuConfigDir is where, in the service's mount namespace, a restore's
// CRIU configuration lives for as long as the restore runs.
const criuConfigDir = "/run/podman-migrate"

// ownCRIUConfig matches the annotation a tcp-close restore left in the
// restored container's spec (a running container's spec cannot be
// edited), which a later checkpoint of it carries: pull drops it, and it
// asks for nothing (the file is gone with its restore; CRIU ignores a
// configuration file that does not exist).
var ownCRIUConfig = regexp.MustCompile(`^/run/podman-migrate/tcp-close-[0-9a-f]{16}\.conf$`)

// criuConfig is the configuration file of one restore.
type criuConfig struct {
	path string // in the service's mount namespace
	root string // the service's root seen from here (/proc/PID/root)
	body []byte
}

// write puts the file in place for the restore; remove takes it away.
func (c *criuConfig) write() error {
	dir := filepath.Join(c.root, criuConfigDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("writing CRIU's configuration for --tcp-close: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".tcp-close-*")
	if err != nil {
		return fmt.Errorf("writing CRIU's configuration for --tcp-close: %w", err)
	}
	_, werr := tmp.Write(c.body)
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), filepath.Join(c.root, c.path))
	}
	if werr != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("writing CRIU's configuration for --tcp-close: %w", werr)
	}
	return nil
}

func (c *criuConfig) remove() { os.Remove(filepath.Join(c.root, c.path)) }

// runtimeCRIUConfig is, for each runtime that reads org.criu.config, the
// file it hands CRIU when the spec names none (the tcp-close configuration
// replaces it for the restore, so its lines are kept), and the first
// version that reads the annotation: runc has since 1.0; crun since 1.26
// (measured: crun 1.21 on podman 5.4.2 ignores it and restores the
// connection established), and needs libcriu >= 4.2, else it refuses the
// restore naming that version.
var runtimeCRIUConfig = map[string]struct{ file, since string }{
	"runc": {"/etc/criu/runc.conf", ""},
	"crun": {"/etc/criu/runc.conf", "1.26"},
}

// runtimeVersion reads the version from podman's report of the runtime
// ("crun version 1.21\ncommit: …", "runc version 1.1.5+ds1\n…").
var runtimeVersion = regexp.MustCompile(`version ([0-9]+(?:\.[0-9]+)*)`)

// tcpClose drops a configuration annotation an earlier tcp-close restore
// left, and, when the connections are to be closed, chooses how: podman's
// tcpClose where it has it, else a CRIU configuration (the service on
// this machine, runc or crun), else a blocker.
func (rl *relocating) tcpClose(ctx context.Context) error {
	ann, err := rl.spec.Annotations()
	if err != nil {
		return nil // privileges reports it
	}
	if v, ok := ann[specAnnCRIUConfig]; ok && ownCRIUConfig.MatchString(v) {
		delete(ann, specAnnCRIUConfig)
		if err := rl.spec.SetAnnotations(ann); err != nil {
			return err
		}
	}
	if !rl.o.TCPClose && !rl.meta.Options.TCPClose {
		return nil
	}
	if rec := rl.meta.Provenance().Options; rec != nil && !rec.TCPEstablished {
		rl.p.warn("--tcp-close: the checkpoint was taken without tcp-established, so it holds no TCP connection to close")
		return nil
	}
	info, err := rl.t.info(ctx)
	if err != nil {
		return err
	}
	if v := info.Version.Version; v != "" && !versionLess(v, tcpCloseSince) {
		rl.p.TCPClose = TCPClosePodman
		return nil
	}
	rt := info.Host.OCIRuntime.Name
	def, ok := runtimeCRIUConfig[rt]
	var rtv string
	if m := runtimeVersion.FindStringSubmatch(info.Host.OCIRuntime.Version); m != nil {
		rtv = m[1]
	}
	switch {
	case rl.t.root == "":
		rl.p.block("--tcp-close: podman %s on %s has no tcpClose (podman %s has), and its service is not on this machine, where pull would hand CRIU a configuration with tcp-close: run pull on that host, or restore without closing the connections", orUnknown(info.Version.Version), rl.t.c.Address(), tcpCloseSince)
		return nil
	case !ok:
		rl.p.block("--tcp-close: podman %s has no tcpClose (podman %s has), and its runtime %s takes no CRIU configuration from the spec (runc does, crun from 1.26)", orUnknown(info.Version.Version), tcpCloseSince, orUnknown(rt))
		return nil
	case def.since != "" && (rtv == "" || versionLess(rtv, def.since)):
		rl.p.block("--tcp-close: podman %s has no tcpClose (podman %s has), and %s %s ignores a CRIU configuration named in the spec (%s %s reads it): restore with runc, or on podman %s", orUnknown(info.Version.Version), tcpCloseSince, rt, orUnknown(rtv), rt, def.since, tcpCloseSince)
		return nil
	}
	name := make([]byte, 8)
	if _, err := rand.Read(name); err != nil {
		return err
	}
	c := &criuConfig{root: rl.t.root, path: criuConfigDir + "/tcp-close-" + hex.EncodeToString(name) + ".conf"}
	if b, err := os.ReadFile(filepath.Join(rl.t.root, def.file)); err == nil {
		c.body = append(b, '\n')
	}
	c.body = append(c.body, "tcp-close\n"...)
	if ann == nil {
		ann = map[string]string{}
	}
	ann[specAnnCRIUConfig] = c.path
	if err := rl.spec.SetAnnotations(ann); err != nil {
		return err
	}
	rl.p.TCPClose, rl.r.criuConfig = TCPCloseCRIUConfig, c
	return nil
}
