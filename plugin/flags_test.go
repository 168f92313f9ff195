package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containers/image/v5/oci/layout"
	"github.com/containers/image/v5/types"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/podman-migrate/podman-migrate/bindings/podmantest"
	"github.com/podman-migrate/podman-migrate/export"
	restore "github.com/podman-migrate/podman-migrate/import"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
	"github.com/podman-migrate/podman-migrate/internal/dump"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
	"github.com/podman-migrate/podman-migrate/migrate"
)

// notForMove are the push and pull flags move does not take, and why.
var notForMove = map[string]string{
	// A move stops the source and keeps its checkpoint, so that the
	// source can be resumed when the target fails; a running source would
	// also leave two live copies (same addresses, same volumes).
	"push --leave-running": "a move stops the source",
	// Pull plans from the image's metadata; a move has no image to plan
	// from before it has checkpointed the container.
	"pull --dry-run": "a move's plan needs the checkpoint",
}

// moveOnly are move's own flags: where to move from, to, and through.
var moveOnly = []string{"from", "to", "to-identity", "via", "parallel"}

func subcommand(t *testing.T, root *cobra.Command, name string) *cobra.Command {
	t.Helper()
	for _, c := range root.Commands() {
		if c.Name() == name {
			return c
		}
	}
	t.Fatalf("no %s command", name)
	return nil
}

// TestMoveHasPushAndPullFlags: move takes every flag of push and pull that
// can apply to it, with the same help, type and default, and nothing
// else but its own.
func TestMoveHasPushAndPullFlags(t *testing.T) {
	root := newRootCmd(io.Discard, io.Discard)
	mv := subcommand(t, root, "move").LocalFlags()
	covered := map[string]bool{}
	for _, name := range []string{"push", "pull"} {
		subcommand(t, root, name).LocalFlags().VisitAll(func(f *pflag.Flag) {
			if f.Name == "help" {
				return
			}
			covered[f.Name] = true
			if _, skip := notForMove[name+" --"+f.Name]; skip {
				if mv.Lookup(f.Name) != nil {
					t.Errorf("move has %s --%s, listed as not for move", name, f.Name)
				}
				return
			}
			m := mv.Lookup(f.Name)
			if m == nil {
				t.Errorf("move lacks %s --%s", name, f.Name)
				return
			}
			if m.Usage != f.Usage {
				t.Errorf("--%s: move's help %q, %s's %q", f.Name, m.Usage, name, f.Usage)
			}
			if m.Value.Type() != f.Value.Type() || m.DefValue != f.DefValue || m.Shorthand != f.Shorthand {
				t.Errorf("--%s: move's %s -%s default %q, %s's %s -%s default %q", f.Name,
					m.Value.Type(), m.Shorthand, m.DefValue, name, f.Value.Type(), f.Shorthand, f.DefValue)
			}
		})
	}
	for flag := range notForMove {
		cmd, name, _ := strings.Cut(flag, " --")
		if subcommand(t, root, cmd).LocalFlags().Lookup(name) == nil {
			t.Errorf("notForMove lists %s, which %s does not have", flag, cmd)
		}
	}
	mv.VisitAll(func(f *pflag.Flag) {
		if f.Name != "help" && !covered[f.Name] && !slices.Contains(moveOnly, f.Name) {
			t.Errorf("move --%s is neither push's, pull's nor one of move's own", f.Name)
		}
	})
}

// parse registers a group on a fresh FlagSet and parses args.
func parse[T any](t *testing.T, add func(*pflag.FlagSet) T, args ...string) T {
	t.Helper()
	f := pflag.NewFlagSet("test", pflag.ContinueOnError)
	g := add(f)
	if err := f.Parse(args); err != nil {
		t.Fatal(err)
	}
	return g
}

func TestRegistryFlagsFill(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want types.OptionalBool
	}{
		{nil, types.OptionalBoolUndefined}, // registries.conf decides
		{[]string{"--tls-verify=false"}, types.OptionalBoolFalse},
		{[]string{"--tls-verify=true"}, types.OptionalBoolTrue},
		{[]string{"--tls-verify"}, types.OptionalBoolTrue},
	} {
		for _, add := range []func(*pflag.FlagSet) *registryFlags{addRegistryFlags, addRegistryAuthFlags} {
			var o transfer.Options
			parse(t, add, tt.args...).fill(&o)
			if o.TLSVerify != tt.want {
				t.Errorf("%v: TLSVerify %v, want %v", tt.args, o.TLSVerify, tt.want)
			}
		}
	}

	var o transfer.Options
	parse(t, addRegistryFlags, "--authfile", "/run/auth.json", "--retry", "5", "--retry-delay", "3s").fill(&o)
	if o.AuthFile != "/run/auth.json" || o.Retries != 5 || o.RetryDelay != 3*time.Second || o.UserAgent != "podman-migrate/"+Version {
		t.Errorf("filled %+v", o)
	}
	o = transfer.Options{}
	parse(t, addRegistryFlags).fill(&o)
	if o.Retries != transfer.DefaultRetries || o.RetryDelay != 0 {
		t.Errorf("defaults: retries %d, delay %s", o.Retries, o.RetryDelay)
	}
	parse(t, addRegistryFlags, "--retry", "0").fill(&o)
	if o.Retries != -1 {
		t.Errorf("--retry 0: Retries %d, want -1 (never)", o.Retries)
	}
	// inspect and kube take no --retry: transfer's default applies.
	o = transfer.Options{}
	parse(t, addRegistryAuthFlags).fill(&o)
	if o.Retries != 0 {
		t.Errorf("auth-only group set Retries %d", o.Retries)
	}
}

func TestPushGroupsFill(t *testing.T) {
	var o export.PushOptions
	parse(t, addCheckpointFlags).fill(&o)
	parse(t, addImageFlags).fill(&o)
	if o.TCPEstablished || o.FileLocks || o.IgnoreRootfs || o.CheckpointTimeout != defaultCRIUTimeout ||
		o.Compression != "zstd" || o.CompressionLevel != nil || o.IncludeBase || o.NoCRIOAnnotations || o.NoStream {
		t.Errorf("defaults: %+v", o)
	}
	parse(t, addCheckpointFlags, "--tcp-established", "--file-locks", "--ignore-rootfs", "--checkpoint-timeout", "0").fill(&o)
	parse(t, addImageFlags, "--compression-format", "gzip", "--compression-level", "0", "--include-base",
		"--no-cri-o-annotations", "--stream-layers=false").fill(&o)
	if !o.TCPEstablished || !o.FileLocks || !o.IgnoreRootfs || o.CheckpointTimeout != 0 ||
		o.Compression != "gzip" || o.CompressionLevel == nil || *o.CompressionLevel != 0 ||
		!o.IncludeBase || !o.NoCRIOAnnotations || !o.NoStream {
		t.Errorf("given: %+v (level %v)", o, o.CompressionLevel)
	}
}

func TestPullGroupsFill(t *testing.T) {
	var o restore.PullOptions
	parse(t, addRestoreFlags).fill(&o)
	if o.RestoreTimeout != defaultCRIUTimeout || o.Name != "" || o.Pod != "" || o.AllowPrivileged {
		t.Errorf("defaults: %+v", o)
	}
	r := parse(t, addRestoreFlags, "-n", "web2", "-p", "8080:80", "--publish", "8443:443", "--pod", "front",
		"--ignore-static-ip", "--ignore-static-mac", "--allow-privileged", "--restore-timeout", "1m")
	r.fill(&o)
	parse(t, addRelocationFlags, "--mount-map", "/a=/b", "--volume-map", "v=w", "--network-map", "n=m", "--mount-map", "/c=/d").fill(&o)
	if o.Name != "web2" || !slices.Equal(o.Publish, []string{"8080:80", "8443:443"}) || o.Pod != "front" ||
		!o.IgnoreStaticIP || !o.IgnoreStaticMAC || !o.AllowPrivileged || o.RestoreTimeout != time.Minute ||
		!slices.Equal(o.MountMap, []string{"/a=/b", "/c=/d"}) || !slices.Equal(o.VolumeMap, []string{"v=w"}) || !slices.Equal(o.NetworkMap, []string{"n=m"}) {
		t.Errorf("given: %+v", o)
	}
	if !r.perContainer() || parse(t, addRestoreFlags, "--pod", "front").perContainer() {
		t.Error("perContainer: --name/--publish name one container, --pod does not")
	}
}

// format checks and writes v as --format f would.
func format(f string, sample, v any) (string, error) {
	o := &outputFlags{format: f}
	if err := o.check(sample); err != nil {
		return "", err
	}
	var b bytes.Buffer
	err := o.write(&b, v)
	return b.String(), err
}

func TestOutputTemplates(t *testing.T) {
	res := &export.PushResult{Reference: "reg:5000/ckpt/web:v1", Digest: "sha256:abc", Container: "web",
		Seconds: map[string]float64{"total": 1.5}, Layers: []export.PushedLayer{{Role: "metadata"}, {Role: "criu", Sent: true}}}
	for _, tt := range []struct{ format, want string }{
		{"{{.Digest}}", "sha256:abc\n"},
		{"{{.Reference}}@{{.Digest}}\n", "reg:5000/ckpt/web:v1@sha256:abc\n"}, // no second newline
		{`{{.Container}}\t{{.Seconds.total}}`, "web\t1.5\n"},                  // \t as podman reads it
		{`{{range .Layers}}{{.Role}}\n{{end -}}`, "metadata\ncriu\n"},
		{`{{json .Seconds}}`, `{"total":1.5}` + "\n"},
		{`{{json "a<b"}}`, `"a<b"` + "\n"}, // no HTML escapes, as podman's
		{`{{upper .Container}} {{lower "A"}}`, "WEB a\n"},
	} {
		got, err := format(tt.format, &export.PushResult{}, res)
		if err != nil || got != tt.want {
			t.Errorf("--format %q: %q, %v; want %q", tt.format, got, err, tt.want)
		}
	}

	// {{json .}} is the document --format json prints, on one line.
	line, err := format("{{json .}}", &export.PushResult{}, res)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := format("json", nil, res)
	if err != nil {
		t.Fatal(err)
	}
	var a, b map[string]any
	if json.Unmarshal([]byte(line), &a) != nil || json.Unmarshal([]byte(doc), &b) != nil || strings.Count(line, "\n") != 1 ||
		!strings.Contains(doc, "\n  \"digest\": \"sha256:abc\"") {
		t.Fatalf("{{json .}} %q, json %q", line, doc)
	}
	if aj, _ := json.Marshal(a); string(aj) != string(must(json.Marshal(b))) {
		t.Errorf("{{json .}} %s differs from --format json %s", line, doc)
	}

	// What each command's template runs on.
	for _, tt := range []struct {
		format      string
		sample, val any
		want        string
	}{
		{"{{.ID}} {{.Name}}", &restore.PullResult{}, &restore.PullResult{ID: "c0ffee", Name: "web"}, "c0ffee web\n"},
		{`{{join .Blockers "; "}}`, &restore.Plan{}, &restore.Plan{Blockers: []string{"a", "b"}}, "a; b\n"},
		{"{{.Container}} {{.Ref}}@{{.Digest}} {{.Error}}", &migrate.MoveResult{}, migrate.MoveResult{Container: "web", Ref: "r", Digest: "d"}, "web r@d \n"},
		{"{{with .Pushed}}{{.Digest}}{{end}}", &migrate.MoveResult{}, migrate.MoveResult{Pushed: &export.PushResult{Digest: "d"}}, "d\n"},
		{"{{.OK}} {{len .Steps}}", &checkReport{}, &checkReport{OK: true, Steps: []checkStep{{}, {}}}, "true 2\n"},
		{"{{.Container.Name}}", &ckpt.Description{}, &ckpt.Description{Container: ckpt.ContainerFacts{Name: "web"}}, "web\n"},
		{"{{.server.podman}}", nil, map[string]any{"server": map[string]string{"podman": "4.3.1"}}, "4.3.1\n"},
	} {
		got, err := format(tt.format, tt.sample, tt.val)
		if err != nil || got != tt.want {
			t.Errorf("--format %q: %q, %v; want %q", tt.format, got, err, tt.want)
		}
	}

	// Usage errors, found before anything runs.
	for _, tt := range []struct {
		format string
		sample any
	}{
		{"yaml", nil},
		{"", nil},
		{"{{.Digest", &export.PushResult{}},
		{"{{nosuchfunc .}}", &export.PushResult{}},
		{"{{.Digets}}", &export.PushResult{}},
		{"{{range .Layers}}{{.Rolle}}{{end}}", &export.PushResult{Layers: make([]export.PushedLayer, 1)}},
		{"{{range .Containers}}{{end}}", &migrate.MoveResult{}}, // move's runs per container
		{"{{.Blockers}}", &restore.PullResult{}},                // the plan's, with --dry-run only
	} {
		_, err := format(tt.format, tt.sample, nil)
		var usage usageError
		if !errors.As(err, &usage) || !strings.Contains(err.Error(), "--format") {
			t.Errorf("--format %q: %v, want a usage error", tt.format, err)
		}
	}
	// A nil pointer in the zero value proves nothing: allowed.
	if _, err := format("{{.Pushed.Digest}}", &migrate.MoveResult{}, migrate.MoveResult{Pushed: &export.PushResult{}}); err != nil {
		t.Errorf("{{.Pushed.Digest}}: %v", err)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// countingService is a podman socket that answers nothing but counts what
// reached it.
type countingService struct {
	mu       sync.Mutex
	requests []string
}

func (s *countingService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, r.Method+" "+r.URL.Path)
	s.mu.Unlock()
	http.Error(w, "no", http.StatusInternalServerError)
}

// TestBadFormatStopsEarly: a mistyped --format exits 2 before any command
// reaches podman (nothing is checkpointed for it).
func TestBadFormatStopsEarly(t *testing.T) {
	svc := &countingService{}
	url := podmantest.Serve(t, svc)
	for _, args := range [][]string{
		{"push", "--format", "{{.Digest", "web", "oci:/nonexistent:x"},
		{"push", "--format", "{{.Digets}}", "web", "oci:/nonexistent:x"},
		{"push", "--format", "jsno", "web", "oci:/nonexistent:x"},
		{"pull", "--format", "{{.Blockers}}", "oci:/nonexistent:x"},
		{"pull", "--dry-run", "--format", "{{.Digest}", "oci:/nonexistent:x"},
		{"move", "--to", url, "--format", "{{.Containers}}", "web", "db"},
		{"check", "--format", "{{.Steps.Name}}"},
		{"version", "--format", "{{.server.podman"},
		{"inspect", "--format", "{{.Nope}}", "oci:/nonexistent:x"},
	} {
		code, stdout, stderr := runCLI(t, append(args, "--url", url)...)
		if code != ExitUsage || stdout != "" || !strings.HasPrefix(stderr, "Error: --format ") || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and one Error: --format line", args, code, stdout, stderr)
		}
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if len(svc.requests) != 0 {
		t.Errorf("podman was called: %v", svc.requests)
	}
}

// checkpointImage builds a checkpoint image of ckpttest's fixture into an
// OCI layout and returns its reference and a policy that accepts it.
func checkpointImage(t *testing.T) (ref, policy string) {
	t.Helper()
	dir := t.TempDir()
	policy = filepath.Join(dir, "policy.json")
	if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	plain := fixtureImage(t, filepath.Join(dir, "image"))
	return "oci:" + plain.StringWithinTransport(), policy
}

// fixtureImage builds a checkpoint image of ckpttest's fixture into an OCI
// layout at dir, tag checkpoint.
func fixtureImage(t *testing.T, dir string) types.ImageReference {
	t.Helper()
	ctx := context.Background()
	img, err := layout.NewReference(dir, "checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	dest, err := img.NewImageDestination(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ckpt.Build(ctx, bytes.NewReader(ckpttest.Tar(t, ckpttest.Archive(t))), dest, ckpt.BuildOptions{
		Annotate: func(cfg *dump.Config) (map[string]string, error) {
			return map[string]string{ckpt.AnnFormat: ckpt.FormatVersion, ckpt.AnnName: cfg.Name(), ckpt.AnnRuntimeName: "runc"}, nil
		},
	})
	if cerr := dest.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestInspectFormats runs inspect in-process: text, json, a field
// template and {{json .}} all describe the same image.
func TestInspectFormats(t *testing.T) {
	ref, policy := checkpointImage(t)
	inspect := func(format string) string {
		t.Helper()
		code, stdout, stderr := runCLI(t, "inspect", "--signature-policy", policy, "--format", format, ref)
		if code != ExitOK {
			t.Fatalf("--format %q: exit %d, stderr %q", format, code, stderr)
		}
		return stdout
	}
	var d ckpt.Description
	doc := inspect("json")
	if err := json.Unmarshal([]byte(doc), &d); err != nil || d.Container.Name != "fixture" || !strings.HasPrefix(d.Digest, "sha256:") {
		t.Fatalf("json: %v, %q", err, doc)
	}
	if got := inspect("text"); !strings.Contains(got, "Container:   fixture") {
		t.Errorf("text: %q", got)
	}
	if got, want := inspect("{{.Container.Name}} {{.Digest}}"), "fixture "+d.Digest+"\n"; got != want {
		t.Errorf("field template: %q, want %q", got, want)
	}
	var again ckpt.Description
	line := inspect("{{json .}}")
	if err := json.Unmarshal([]byte(line), &again); err != nil || strings.Count(line, "\n") != 1 || again.Digest != d.Digest {
		t.Errorf("{{json .}}: %v, %q", err, line)
	}
}

// TestCheckTemplate: check's template runs on its report.
func TestCheckTemplate(t *testing.T) {
	f := newFake()
	withProbe(t, &fakeProbe{remote: true})
	code, stdout, stderr := runCLI(t, "check", "--format", `{{.OK}} {{.Server.Podman}}{{range .Steps}} {{.Name}}{{end}}`, "--url", f.serve(t))
	if want := "true 4.3.1 server runtime criu create checkpoint restore restored remove\n"; code != ExitOK || stdout != want {
		t.Errorf("exit %d, stdout %q, want %q; stderr %s", code, stdout, want, stderr)
	}
}

// TestMoveWithoutViaRefusesImageFlags: without --via no image is made, so
// asking to encrypt, sign or include the base image is a usage error, not
// a silent no-op, before podman is called.
func TestMoveWithoutViaRefusesImageFlags(t *testing.T) {
	svc := &countingService{}
	url := podmantest.Serve(t, svc)
	for _, flag := range [][]string{
		{"--encryption-key", "jwe:/nonexistent.pem"},
		{"--sign-by-sigstore-private-key", "/nonexistent.key"},
		{"--include-base"},
	} {
		code, _, stderr := runCLI(t, append(append([]string{"move", "--url", url, "--to", url}, flag...), "web")...)
		if code != ExitUsage || !strings.Contains(stderr, "need --via") {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 naming --via", flag, code, stderr)
		}
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if len(svc.requests) != 0 {
		t.Errorf("podman was called: %v", svc.requests)
	}
}
