package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/export"
	restore "github.com/podman-migrate/podman-migrate/import"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
	"github.com/podman-migrate/podman-migrate/migrate"
)

type moveOptions struct {
	global     *globalOptions
	from, to   string
	toIdentity string
	via        string
	parallel   int
	checkpoint *checkpointFlags
	image      *imageFlags
	seal       *sealFlags
	restore    *restoreFlags
	relocation *relocationFlags
	trust      *trustFlags
	limits     *limitFlags
	registry   *registryFlags
	staging    *stagingFlags
	out        *outputFlags
}

// moveReport is move's --format json document. A --format template runs
// on each of its Containers instead, as it ends.
type moveReport struct {
	Containers []migrate.MoveResult `json:"containers"`
}

func newMoveCmd(g *globalOptions) *cobra.Command {
	o := &moveOptions{global: g}
	cmd := &cobra.Command{
		Use:   "move [flags] CONTAINER|POD... --to URI|CONNECTION",
		Short: "Move running containers from one podman to another in one command",
		Long: `Move each CONTAINER from the podman at --from (default: --url or
--connection) to the podman at --to: checkpoint, verify, relocate and
restore, as push and pull do.

Without --via, each checkpoint streams from the source's podman into the
target's restore in one pass: podman's archive is checked entry by entry
and config.dump relocated on the way, nothing is written to disk here and
no image is made. --compress chooses how the stream crosses to the target
(auto: zstd:1 to a tcp:// or ssh:// target, none to a unix:// socket).

With --via host/repo the images go through that registry repository and
stay there, one tag per container (host/repo:CONTAINER); the digest
references are printed.

If the restore on the target fails, the source container is restored from
its kept checkpoint and the error says so: a move never loses a container.
After a move the source container stays stopped with its checkpoint kept;
podman rm discards it. One summary line per container goes to stdout;
the exit code is 0 only when every container moved. --format json prints
one document, {"containers": [...]}, at the end; a --format template runs
on each container's result as it ends: --format '{{.Container}} {{.ID}}'.

A name that is a pod's on the source (and no container's) moves the pod
whole, as push POD and pull of its index do: every member frozen before
the first is dumped, the pod made anew on the target and every member
restored into it; if that fails, the pod is removed from the target and
every member restored on the source. Without --via, a pod's index is
staged in --tmpdir on this machine (its members are not streamed yet).

--from and --to take a URI (unix://, ssh://, tcp://) or the name of a
podman system connection.`,
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
	// Every push and pull flag that can apply to a move, declared where
	// push and pull declare it (TestMoveHasPushAndPullFlags).
	o.checkpoint = addCheckpointFlags(f)
	o.image = addImageFlags(f)
	o.seal = addSealFlags(f)
	o.restore = addRestoreFlags(f)
	o.relocation = addRelocationFlags(f)
	o.trust = addTrustFlags(f)
	o.limits = addLimitFlags(f)
	o.registry = addRegistryFlags(f)
	o.staging = addStagingFlags(f)
	o.out = addOutputFlags(f)
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
	lim, err := o.check(args)
	if err != nil {
		return err
	}
	src, dst, err := o.connect(ctx)
	if err != nil {
		return err
	}
	var rep moveReport
	var mu sync.Mutex
	var werr error // the first failed template
	err = migrate.Move(ctx, src, dst, o.moveOptions(ctx, args, lim), func(r migrate.MoveResult) {
		mu.Lock()
		defer mu.Unlock()
		if err := o.report(stdout, &rep, r); err != nil && werr == nil {
			werr = err
		}
	})
	if o.out.format == "json" {
		werr = o.out.write(stdout, rep)
	}
	if err == nil {
		err = werr
	}
	return err
}

// check refuses a command line that cannot work, before any connection.
func (o *moveOptions) check(args []string) (ckpt.Limits, error) {
	// A template runs once per container, as podman ps's does.
	if err := o.out.check(&migrate.MoveResult{}); err != nil {
		return ckpt.Limits{}, err
	}
	if o.to == "" {
		return ckpt.Limits{}, usageError{errors.New("--to is required; see --help")}
	}
	lim, err := o.limits.limits()
	if err != nil {
		return ckpt.Limits{}, err
	}
	if o.via == "" {
		// No image is made: nothing to encrypt, sign or go with.
		if len(o.seal.encryptionKeys) > 0 || o.seal.signKey != "" || o.image.includeBase {
			return ckpt.Limits{}, usageError{errors.New("--encryption-key, --sign-by-sigstore-private-key and --include-base need --via: without a registry, move streams the checkpoint from podman to podman and makes no image (an ssh:// --to encrypts the stream)")}
		}
	} else {
		sealDest := o.via + ":probe"
		if _, err := transfer.ParseReference(sealDest); err != nil {
			return ckpt.Limits{}, fmt.Errorf("--via %q: %w", o.via, err)
		}
		if err := o.seal.check(sealDest); err != nil {
			return ckpt.Limits{}, err
		}
	}
	if err := o.trust.check(); err != nil {
		return ckpt.Limits{}, err
	}
	if err := o.restore.check(); err != nil {
		return ckpt.Limits{}, err
	}
	if o.restore.perContainer() && len(args) > 1 {
		return ckpt.Limits{}, usageError{errors.New("--name and --publish apply to a single container")}
	}
	if o.from != "" && (o.global.url != "" || o.global.connection != "") {
		return ckpt.Limits{}, usageError{errors.New("give --from or --url/--connection, not both")}
	}
	return lim, nil
}

// connect reaches the source (--from, else --url/--connection) and the
// target (--to).
func (o *moveOptions) connect(ctx context.Context) (*podman.Client, *podman.Client, error) {
	sd, err := o.global.destination()
	if o.from != "" {
		sd, err = endpoint(o.from, o.global.identity)
	}
	var src *podman.Client
	if err == nil {
		src, err = connectRootful(ctx, sd)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("source: %w", err)
	}
	d, err := endpoint(o.to, o.toIdentity)
	if err != nil {
		return nil, nil, fmt.Errorf("target: %w", err)
	}
	dst, err := connectRootful(ctx, d)
	if err != nil {
		return nil, nil, fmt.Errorf("target: %w", err)
	}
	return src, dst, nil
}

// moveOptions fills the push and pull templates from the same flag
// groups push and pull register.
func (o *moveOptions) moveOptions(ctx context.Context, args []string, lim ckpt.Limits) migrate.MoveOptions {
	mo := migrate.MoveOptions{Containers: args, Via: o.via, Parallel: o.parallel, Log: o.global.log()}
	mo.Push = export.PushOptions{ToolVersion: Version, TmpDir: o.staging.dir, StopWaiting: secondInterrupt(ctx)}
	o.checkpoint.fill(&mo.Push)
	o.image.fill(&mo.Push)
	o.registry.fill(&mo.Push.Transfer)
	o.seal.fill(&mo.Push.Transfer)
	mo.Pull = restore.PullOptions{Limits: lim, TmpDir: o.staging.dir}
	o.restore.fill(&mo.Pull)
	mo.Pull.TCPClose = o.checkpoint.tcpClose
	o.relocation.fill(&mo.Pull)
	o.registry.fill(&mo.Pull.Transfer)
	o.trust.fill(&mo.Pull.Transfer)
	return mo
}

// report prints one container's result as it is known (text or a
// template), or keeps it for the one JSON document.
func (o *moveOptions) report(stdout io.Writer, rep *moveReport, r migrate.MoveResult) error {
	switch {
	case o.out.format == "json":
		rep.Containers = append(rep.Containers, r)
		return nil
	case !o.out.text():
		return o.out.write(stdout, r)
	case r.Err != nil:
		_, err := fmt.Fprintf(stdout, "%s\tfailed\t%s\n", r.Container, oneLine(r.Err.Error()))
		return err
	}
	ref := r.Ref + "@" + r.Digest
	if o.via == "" {
		ref = "-"
	}
	_, err := fmt.Fprintf(stdout, "%s\tmoved\t%s\t%s\t%s\t%.1fs\n", r.Container, r.Name, r.ID, ref, r.Seconds)
	return err
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }
