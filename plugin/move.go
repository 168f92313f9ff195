package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/export"
	restore "github.com/podman-migrate/podman-migrate/import"
	"github.com/podman-migrate/podman-migrate/internal/move"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

type moveOptions struct {
	global         *globalOptions
	from, to       string
	toIdentity     string
	via            string
	parallel       int
	name           string
	tlsVerify      bool
	authFile       string
	compression    string
	tcpEstablished bool
	fileLocks      bool
	ignoreRootfs   bool
	includeBase    bool
	mountMap       []string
	volumeMap      []string
	networkMap     []string
	publish        []string
	ignoreIP       bool
	ignoreMAC      bool
	format         string
	allowPriv      bool
	limits         *limitFlags
	seal           *sealFlags
	trust          *trustFlags
	retry          *retryFlags
	level          int
	levelSet       func() bool
	stream         bool
	tmpDir         string
	tlsVerifySet   func() bool
	ckptTimeout    time.Duration
	restoreTimeout time.Duration
}

func newMoveCmd(g *globalOptions) *cobra.Command {
	o := &moveOptions{global: g}
	cmd := &cobra.Command{
		Use:   "move [flags] CONTAINER... --to URI|CONNECTION",
		Short: "Move running containers from one podman to another in one command",
		Long: `Move each CONTAINER from the podman at --from (default: --url or
--connection) to the podman at --to: checkpoint, verify, relocate and
restore, as push and pull do.

With --via host/repo the images go through that registry repository and
stay there, one tag per container (host/repo:CONTAINER); the digest
references are printed. Without --via they pass through a staging
directory on this machine, with no registry.

If the restore on the target fails, the source container is restored from
its kept checkpoint and the error says so: a move never loses a container.
After a move the source container stays stopped with its checkpoint kept;
podman rm discards it. One summary line per container goes to stdout;
the exit code is 0 only when every container moved.

--from and --to take a URI (unix://, ssh://) or the name of a podman
system connection.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{errors.New("name at least one container; see --help")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), args, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.from, "from", "", "source podman: URI or connection name (default --url / --connection)")
	f.StringVar(&o.to, "to", "", "target podman: URI or connection name (required)")
	f.StringVar(&o.toIdentity, "to-identity", "", "ssh identity file for an ssh:// --to")
	f.StringVar(&o.via, "via", "", "registry repository to move through (host/repo); default: no registry")
	f.IntVar(&o.parallel, "parallel", 2, "containers moved at once")
	f.StringVarP(&o.name, "name", "n", "", "name of the new container (one container only)")
	f.BoolVar(&o.tlsVerify, "tls-verify", true, "require HTTPS and verify certificates when talking to the registry")
	f.StringVar(&o.authFile, "authfile", "", "path of the authentication file (default: podman login's)")
	f.StringVar(&o.compression, "compression-format", "zstd", "layer compression: zstd or gzip")
	f.BoolVar(&o.tcpEstablished, "tcp-established", false, "checkpoint established TCP connections")
	f.BoolVar(&o.fileLocks, "file-locks", false, "checkpoint file locks")
	f.BoolVar(&o.ignoreRootfs, "ignore-rootfs", false, "leave root file-system changes out")
	f.BoolVar(&o.includeBase, "include-base", false, "also copy the base image into the --via repository")
	f.StringArrayVar(&o.mountMap, "mount-map", nil, "relocate bind mounts: SRC=DST (repeatable; see pull --help)")
	f.StringArrayVar(&o.volumeMap, "volume-map", nil, "restore named volume OLD as NEW: OLD=NEW (repeatable)")
	f.StringArrayVar(&o.networkMap, "network-map", nil, "attach to network NEW where it was on OLD: OLD=NEW (repeatable)")
	f.StringArrayVarP(&o.publish, "publish", "p", nil, "publish a port on the target (one container only; repeatable)")
	f.BoolVar(&o.ignoreIP, "ignore-static-ip", false, "let the target's podman choose new IP addresses")
	f.BoolVar(&o.ignoreMAC, "ignore-static-mac", false, "let the target's podman choose new MAC addresses")
	f.StringVar(&o.format, "format", "text", "output: text (a line per container) or json (a document with every container's result, per-phase seconds and bytes)")
	f.BoolVar(&o.allowPriv, "allow-privileged", false, "move containers that ask for more than an ordinary container (see pull --help)")
	o.limits = addLimitFlags(f)
	o.seal = addSealFlags(f)
	o.trust = addTrustFlags(f)
	o.retry = addRetryFlags(f)
	f.IntVar(&o.level, "compression-level", 0, "compression level (zstd 1-20, gzip 1-9; default: the library's, zstd 3)")
	o.levelSet = func() bool { return f.Changed("compression-level") }
	f.BoolVar(&o.stream, "stream-layers", true, "with --via: upload the CRIU layer while it is built; false stages the whole image first")
	f.StringVar(&o.tmpDir, "tmpdir", "", "staging directory for the image (default $TMPDIR, else /var/tmp); needs room for the container's memory")
	o.tlsVerifySet = func() bool { return f.Changed("tls-verify") }
	f.DurationVar(&o.ckptTimeout, "checkpoint-timeout", defaultCRIUTimeout, checkpointTimeoutHelp)
	f.DurationVar(&o.restoreTimeout, "restore-timeout", defaultCRIUTimeout, restoreTimeoutHelp)
	return cmd
}

// endpoint turns a --from/--to value into a destination: a URI, or a
// podman system connection's name.
func endpoint(v, identity string) (podman.Destination, error) {
	if strings.Contains(v, "://") {
		return resolve("", v, identity)
	}
	return resolve(v, "", identity)
}

func (o *moveOptions) run(ctx context.Context, args []string, stdout io.Writer) error {
	if err := outputFormat(o.format); err != nil {
		return err
	}
	if o.to == "" {
		return usageError{errors.New("--to is required; see --help")}
	}
	lim, err := o.limits.limits()
	if err != nil {
		return err
	}
	sealDest := "oci:staging"
	if o.via != "" {
		sealDest = o.via + ":probe"
	}
	if err := o.seal.check(sealDest); err != nil {
		return err
	}
	if err := o.trust.check(); err != nil {
		return err
	}
	if (o.name != "" || len(o.publish) > 0) && len(args) > 1 {
		return usageError{errors.New("--name and --publish apply to a single container")}
	}
	var src *podman.Client
	if o.from != "" {
		if o.global.url != "" || o.global.connection != "" {
			return usageError{errors.New("give --from or --url/--connection, not both")}
		}
		var d podman.Destination
		if d, err = endpoint(o.from, o.global.identity); err == nil {
			src, err = connectRootful(ctx, d)
		}
	} else {
		src, err = o.global.rootfulClient(ctx)
	}
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	d, err := endpoint(o.to, o.toIdentity)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	dst, err := connectRootful(ctx, d)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	if o.via != "" {
		if _, err := transfer.ParseReference(o.via + ":probe"); err != nil {
			return fmt.Errorf("--via %q: %w", o.via, err)
		}
	}
	tr := transfer.Options{
		TLSVerify: transfer.TLSVerify(o.tlsVerifySet(), o.tlsVerify),
		AuthFile:  o.authFile,
		UserAgent: "podman-migrate/" + Version,
	}
	tr = o.retry.set(tr)
	pushTr, pullTr := o.seal.set(tr), o.trust.set(tr)
	var mu sync.Mutex
	var results []move.Result
	err = move.Move(ctx, src, dst, move.Options{
		Containers: args,
		Via:        o.via,
		Parallel:   o.parallel,
		Push: export.PushOptions{
			TCPEstablished: o.tcpEstablished, FileLocks: o.fileLocks, IgnoreRootfs: o.ignoreRootfs,
			IncludeBase: o.includeBase, Compression: o.compression, CompressionLevel: levelOf(o.levelSet(), o.level), NoStream: !o.stream, Transfer: pushTr, ToolVersion: Version, TmpDir: o.tmpDir,
			CheckpointTimeout: o.ckptTimeout, StopWaiting: secondInterrupt(ctx),
		},
		Pull: restore.PullOptions{
			Name: o.name, MountMap: o.mountMap, VolumeMap: o.volumeMap, NetworkMap: o.networkMap,
			Publish: o.publish, IgnoreStaticIP: o.ignoreIP, IgnoreStaticMAC: o.ignoreMAC, Transfer: pullTr,
			Limits: lim, AllowPrivileged: o.allowPriv, TmpDir: o.tmpDir,
			RestoreTimeout: o.restoreTimeout,
		},
		Log: o.global.log(),
	}, func(r move.Result) {
		mu.Lock()
		defer mu.Unlock()
		if o.format == "json" {
			results = append(results, r)
			return
		}
		if r.Err != nil {
			fmt.Fprintf(stdout, "%s\tfailed\t%s\n", r.Container, oneLine(r.Err.Error()))
			return
		}
		ref := r.Ref + "@" + r.Digest
		if o.via == "" {
			ref = "-"
		}
		fmt.Fprintf(stdout, "%s\tmoved\t%s\t%s\t%s\t%.1fs\n", r.Container, r.Name, r.ID, ref, r.Seconds)
	})
	if o.format == "json" {
		if jerr := writeJSON(stdout, map[string]any{"containers": results}); jerr != nil && err == nil {
			err = jerr
		}
	}
	return err
}

func connectRootful(ctx context.Context, d podman.Destination) (*podman.Client, error) {
	c, err := podman.ConnectTo(ctx, d)
	if err != nil {
		return nil, err
	}
	if err := c.RequireRootful(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }
