//go:build e2e

// Package e2e migrates real running containers between two podman "hosts"
// on this machine: host A (this machine's storage) and host B (its own
// mount namespace, none of A's storage paths visible), through a real
// registry, with real CRIU. tests/hosts.sh starts them.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// env is what tests/hosts.sh up writes to env.json.
type env struct {
	Registry  string `json:"REGISTRY"`
	HostAURL  string `json:"HOST_A_URL"`
	HostBURL  string `json:"HOST_B_URL"`
	HostBPID  string `json:"HOST_B_PID"`
	HostCURL  string `json:"HOST_C_URL"`
	HostCPID  string `json:"HOST_C_PID"`
	TestImage string `json:"TEST_IMAGE"`
	HostAData string `json:"HOST_A_DATA"`
}

var (
	hosts    env
	bin      string // the podman-migrate binary under test
	repo     string
	stateDir string
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	flag.Parse()
	// Not a skip: a tier that reports success without running proves
	// nothing.
	if os.Geteuid() != 0 {
		fmt.Println("FAIL e2e: needs root (podman rootful, CRIU, mount namespaces); run `make test` as root")
		return 1
	}
	_, file, _, _ := runtime.Caller(0)
	repo = filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	tmp, err := os.MkdirTemp("", "podman-migrate-e2e-")
	if err != nil {
		fmt.Println("e2e:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	bin = filepath.Join(tmp, "podman-migrate")
	build := exec.Command("go", "build", "-tags", "remote exclude_graphdriver_btrfs btrfs_noversion exclude_graphdriver_devicemapper containers_image_openpgp",
		"-ldflags", "-X main.Version=e2e", "-o", bin, "./plugin")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Printf("e2e: building podman-migrate: %v\n%s", err, out)
		return 1
	}
	// E2E_STATE (tests/run-e2e.sh sets it) lets a trap outside this
	// process stop the hosts when go test itself is killed.
	stateDir = os.Getenv("E2E_STATE")
	if stateDir == "" {
		stateDir = filepath.Join(tmp, "hosts")
	}
	stop := stopOnExit(tmp)
	defer stop()
	up := exec.Command("bash", filepath.Join(repo, "tests", "hosts.sh"), "up", stateDir)
	up.Stdout, up.Stderr = os.Stderr, os.Stderr
	if err := runBounded(up, 5*time.Minute); err != nil {
		fmt.Printf("e2e: starting the test hosts failed (%v); run `make setup-host` first\n", err)
		return 1
	}
	b, err := os.ReadFile(filepath.Join(stateDir, "env.json"))
	if err == nil {
		err = json.Unmarshal(b, &hosts)
	}
	if err != nil || hosts.Registry == "" || hosts.HostBURL == "" {
		fmt.Printf("e2e: reading %s/env.json: %v (%s)\n", stateDir, err, b)
		return 1
	}
	if !checkHosts() {
		return 1
	}
	return m.Run()
}

// hostCheck is what `podman-migrate check --format json` did on one test
// host before the first test; TestCheck asserts on it.
type hostCheck struct {
	name, url string
	report    string   // check's stdout
	before    []string // the host's containers before check, and after
	after     []string
}

var hostChecks []hostCheck

// checkHosts runs `podman-migrate check` on every test host before the
// first migration: a host that cannot checkpoint fails the tier in about a
// minute, with check's message, instead of hanging test after test.
func checkHosts() bool {
	ok := true
	for _, h := range []hostCheck{{name: "A", url: hosts.HostAURL}, {name: "B", url: hosts.HostBURL}, {name: "C", url: hosts.HostCURL}} {
		h.before = listContainers(h.url)
		cmd := exec.Command(bin, "--url", h.url, "check", "--format", "json", "--timeout", "60s", "--image", hosts.TestImage)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := runBounded(cmd, 4*time.Minute)
		h.report, h.after = out.String(), listContainers(h.url)
		hostChecks = append(hostChecks, h)
		if err != nil {
			fmt.Printf("e2e: FAIL: host %s cannot checkpoint and restore (podman-migrate check: %v):\n%s%s", h.name, err, out.String(), errb.String())
			ok = false
			continue
		}
		fmt.Fprintf(os.Stderr, "e2e: host %s: podman-migrate check passed\n", h.name)
	}
	return ok
}

// listContainers is the sorted names of a host's containers, or nil with
// the error printed.
func listContainers(url string) []string {
	cmd := exec.Command("podman", "--url", url, "ps", "-a", "--format", "{{.Names}}")
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := runBounded(cmd, time.Minute); err != nil {
		fmt.Printf("e2e: listing containers on %s: %v\n", url, err)
		return nil
	}
	names := strings.Fields(out.String())
	slices.Sort(names)
	return names
}

// stopOnExit stops every service the run started (CRI-O, the hosts, the
// registry) and unmounts what tests mounted under tmp, once: when testMain
// returns, on SIGINT or SIGTERM, and shortly before go test's -timeout
// would kill the binary without running any deferred function.
func stopOnExit(tmp string) func() {
	var once sync.Once
	stop := func() {
		once.Do(func() {
			dirs, _ := filepath.Glob(filepath.Join(stateDir, "crio-*"))
			for _, d := range dirs {
				c := exec.Command("bash", filepath.Join(repo, "tests", "crio.sh"), "down", d)
				c.Stdout, c.Stderr = os.Stderr, os.Stderr
				_ = runBounded(c, 2*time.Minute)
			}
			d := exec.Command("bash", filepath.Join(repo, "tests", "hosts.sh"), "down", stateDir)
			d.Stdout, d.Stderr = os.Stderr, os.Stderr
			_ = runBounded(d, 3*time.Minute)
			unmountUnder(tmp)
			unmountUnder(os.TempDir() + "/Test")
		})
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "e2e: %v: stopping the test hosts\n", s)
		stop()
		os.Exit(1)
	}()
	if f := flag.Lookup("test.timeout"); f != nil {
		if d, err := time.ParseDuration(f.Value.String()); err == nil && d > 0 {
			margin := min(2*time.Minute, d/10)
			time.AfterFunc(d-margin, func() {
				fmt.Fprintf(os.Stderr, "e2e: FAIL: go test's -timeout %v is %v away: stopping the test hosts first\n", d, margin)
				stop()
				panic("e2e: test run timed out; hosts stopped")
			})
		}
	}
	return stop
}

// unmountUnder lazily unmounts every mount whose path starts with prefix.
func unmountUnder(prefix string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var targets []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], prefix) {
			targets = append(targets, f[4])
		}
	}
	slices.Sort(targets)
	for i := len(targets) - 1; i >= 0; i-- {
		_ = syscall.Unmount(targets[i], syscall.MNT_DETACH)
	}
}

// cmdTimeout bounds every command a test runs (podman, podman-migrate,
// skopeo, crictl, ...): far below go test's -timeout, so that a hang fails
// one test in minutes and shows why.
const cmdTimeout = 5 * time.Minute

// runBounded runs cmd in a process group of its own, killed whole after d.
func runBounded(cmd *exec.Cmd, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	bound(ctx, cmd)
	err := cmd.Run()
	if ctx.Err() != nil {
		return fmt.Errorf("timed out after %v: %w", d, err)
	}
	return err
}

// bound makes ctx's end kill cmd's whole process group (podman's children,
// nsenter's, bash's), and keeps Wait from waiting on pipes they hold.
func bound(ctx context.Context, cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	if !cmd.SysProcAttr.Setsid {
		cmd.SysProcAttr.Setpgid = true
	}
	cmd.WaitDelay = 10 * time.Second
	go func() {
		<-ctx.Done()
		if cmd.Process != nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
	}()
}

// criuLogTail is the end of the newest CRIU logs in the hosts' storage:
// what a hung or failed checkpoint left behind.
func criuLogTail() string {
	var logs []string
	for _, root := range []string{"/var/lib/containers/storage", filepath.Join(stateDir, "b", "storage"), filepath.Join(stateDir, "c", "storage")} {
		for _, name := range []string{"dump.log", "restore.log"} {
			m, _ := filepath.Glob(filepath.Join(root, "overlay-containers", "*", "userdata", name))
			logs = append(logs, m...)
		}
	}
	slices.SortFunc(logs, func(a, b string) int {
		ia, _ := os.Stat(a)
		ib, _ := os.Stat(b)
		if ia == nil || ib == nil {
			return 0
		}
		return ib.ModTime().Compare(ia.ModTime())
	})
	var out strings.Builder
	for _, l := range logs[:min(2, len(logs))] {
		b, _ := os.ReadFile(l)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		fmt.Fprintf(&out, "\n--- last lines of %s ---\n%s", l, strings.Join(lines[max(0, len(lines)-8):], "\n"))
	}
	return out.String()
}

// result is one finished command.
type result struct {
	code           int
	stdout, stderr string
}

func runCmd(t *testing.T, name string, args ...string) result {
	t.Helper()
	return runCmdEnv(t, nil, name, args...)
}

// runCmdEnv is runCmd with extra environment variables.
func runCmdEnv(t *testing.T, env []string, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	bound(ctx, cmd)
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ctx.Err() != nil {
		t.Fatalf("%s %v: no answer in %v, killed\nstdout: %s\nstderr: %s%s", name, args, cmdTimeout, r.stdout, r.stderr, criuLogTail())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running %s %v: %v", name, args, err)
	}
	return r
}

// migrate runs podman-migrate and logs what it printed.
func migrate(t *testing.T, args ...string) result {
	t.Helper()
	return migrateEnv(t, nil, args...)
}

// migrateEnv is migrate with extra environment variables.
func migrateEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	r := runCmdEnv(t, env, bin, args...)
	t.Logf("podman-migrate %s -> exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	// The contract for every failure: nothing on stdout, and one error
	// line, the last thing on stderr.
	if r.code != 0 {
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		if r.stdout != "" || strings.Count(r.stderr, "Error: ") != 1 || !strings.HasPrefix(lines[len(lines)-1], "Error: ") {
			t.Errorf("failure output breaks the contract: stdout %q, stderr %q", r.stdout, r.stderr)
		}
	}
	return r
}

// podman runs the podman client against a host's service and fails the
// test if it fails.
func podman(t *testing.T, url string, args ...string) string {
	t.Helper()
	r := podmanTry(t, url, args...)
	if r.code != 0 {
		t.Fatalf("podman %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return strings.TrimSpace(r.stdout)
}

func podmanTry(t *testing.T, url string, args ...string) result {
	t.Helper()
	return runCmd(t, "podman", append([]string{"--url", url}, args...)...)
}

// statusCmd prints the workload's status in its container: the workload
// itself, since some test images have no cat.
var statusCmd = []string{"/bin/workload", "-cat", "/workload/status"}

// status is what the workload writes to /workload/status.
type status struct {
	Boot       string `json:"boot"`
	Counter    uint64 `json:"counter"`
	InitialSum string `json:"initial_sum"`
	Sum        string `json:"sum"`
	SumAt      uint64 `json:"sum_at"`
}

func readStatus(t *testing.T, url, ctr string) status {
	t.Helper()
	var st status
	readStatusInto(t, url, ctr, &st)
	return st
}

// readStatusInto decodes the workload's status file into st.
func readStatusInto(t *testing.T, url, ctr string, st any) {
	t.Helper()
	out := podman(t, url, append([]string{"exec", ctr}, statusCmd...)...)
	if err := json.Unmarshal([]byte(out), st); err != nil {
		t.Fatalf("parsing status %q: %v", out, err)
	}
}

// waitStatus polls until ok accepts the workload's status. The bound only
// keeps a broken run from hanging; no assertion depends on timing.
func waitStatus(t *testing.T, url, ctr string, ok func(status) bool) status {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var st status
	for time.Now().Before(deadline) {
		r := podmanTry(t, url, append([]string{"exec", ctr}, statusCmd...)...)
		if r.code == 0 && json.Unmarshal([]byte(r.stdout), &st) == nil && ok(st) {
			return st
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("container %s never reached the expected state; last status %+v", ctr, st)
	return st
}

// startWorkload runs the test workload on host A and waits until it counts.
func startWorkload(t *testing.T, name string, extra ...string) status {
	t.Helper()
	return startWorkloadMem(t, name, 32, extra...)
}

// startWorkloadMem is startWorkload with mib MiB of memory held.
func startWorkloadMem(t *testing.T, name string, mib int, extra ...string) status {
	t.Helper()
	return startWorkloadOn(t, hosts.HostAURL, name, mib, extra...)
}

// startWorkloadOn starts the workload on the host at url.
func startWorkloadOn(t *testing.T, url, name string, mib int, extra ...string) status {
	t.Helper()
	return startWorkloadFrom(t, url, name, hosts.TestImage, mib, extra...)
}

// startWorkloadFrom starts the workload from image, which has it at
// /bin/workload, on the host at url.
func startWorkloadFrom(t *testing.T, url, name, image string, mib int, extra ...string) status {
	t.Helper()
	args := append([]string{"run", "-d", "--name", name}, extra...)
	args = append(args, image, "/bin/workload", "-mem", strconv.Itoa(mib), "-sum-every", "5")
	podman(t, url, args...)
	t.Cleanup(func() { podmanTry(t, url, "rm", "-f", name) })
	return waitStatus(t, url, name, func(s status) bool { return s.Counter >= 5 })
}

// checkContinued asserts the container on url carries on from before: same
// boot, counter past before's, memory checksum recomputed after the restore
// and equal to the original.
func checkContinued(t *testing.T, url, ctr string, before status) {
	t.Helper()
	if state := podman(t, url, "inspect", "--format", "{{.State.Status}}", ctr); state != "running" {
		t.Fatalf("container %s is %s, want running", ctr, state)
	}
	continued(t, before, waitStatus(t, url, ctr, func(s status) bool { return s.SumAt > before.Counter }))
}

// continued asserts that after, read once the memory checksum was
// recomputed past before's counter, is the same process carried on.
func continued(t *testing.T, before, after status) {
	t.Helper()
	if after.Boot != before.Boot {
		t.Fatalf("process restarted: boot %s, was %s", after.Boot, before.Boot)
	}
	if after.Counter <= before.Counter {
		t.Fatalf("counter %d did not continue past %d", after.Counter, before.Counter)
	}
	if after.Sum != before.InitialSum {
		t.Fatalf("memory checksum %s after restore, was %s", after.Sum, before.InitialSum)
	}
}

func containerNames(t *testing.T, url string) []string {
	t.Helper()
	out := podman(t, url, "ps", "-a", "--format", "{{.Names}}")
	if out == "" {
		return nil
	}
	names := strings.Fields(out)
	slices.Sort(names)
	return names
}

// unchangedOnB records host B's containers; the function it returns fails
// the test if they changed since (a refused pull must create nothing).
func unchangedOnB(t *testing.T) func() {
	t.Helper()
	before := containerNames(t, hosts.HostBURL)
	return func() {
		t.Helper()
		if after := containerNames(t, hosts.HostBURL); !slices.Equal(before, after) {
			t.Fatalf("containers on B changed: %v -> %v", before, after)
		}
	}
}

// pushCopy starts the workload as src on host A and pushes a copy of it
// (--leave-running) to ref, failing the test if the push fails.
func pushCopy(t *testing.T, src, ref string, runArgs ...string) status {
	t.Helper()
	before := startWorkload(t, src, runArgs...)
	if r := migrate(t, "--url", hosts.HostAURL, "push", "--leave-running", "--tls-verify=false", src, ref); r.code != 0 {
		t.Fatalf("push failed: %s", r.stderr)
	}
	return before
}

// pushPull pushes src from the host at from to ref, and pulls it as dst
// on the host at to (removed when the test ends), failing the test if
// either fails.
func pushPull(t *testing.T, from, to, src, dst, ref string, pullFlags ...string) {
	t.Helper()
	r := migrate(t, "--url", from, "push", "--tls-verify=false", src, ref)
	if r.code != 0 {
		t.Fatalf("push failed: %s", r.stderr)
	}
	rmOn(t, to, dst)
	args := append([]string{"--url", to, "pull", "--tls-verify=false", "--name", dst}, pullFlags...)
	if r = migrate(t, append(args, strings.TrimSpace(r.stdout))...); r.code != 0 {
		t.Fatalf("pull failed: %s", r.stderr)
	}
}

func hasContainer(t *testing.T, url, name string) bool {
	t.Helper()
	for _, n := range containerNames(t, url) {
		if n == name {
			return true
		}
	}
	return false
}

// rmB removes a container on host B when the test ends.
func rmB(t *testing.T, name string) {
	t.Cleanup(func() { podmanTry(t, hosts.HostBURL, "rm", "-f", name) })
}

// startReadOnlyRegistry runs one more docker-registry for a test, in
// read-only mode (it answers, but refuses uploads, as a registry in
// maintenance does), and returns its host:port.
func startReadOnlyRegistry(t *testing.T) string {
	t.Helper()
	addr, _ := runRegistry(t, true)
	return addr
}

// startRegistry runs one more docker-registry for a test and returns its
// address and a function that kills it.
func startRegistry(t *testing.T) (string, func()) {
	t.Helper()
	return runRegistry(t, false)
}

func runRegistry(t *testing.T, readOnly bool) (string, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: %s
  maintenance:
    readonly:
      enabled: %t
http:
  addr: %s
`, filepath.Join(dir, "data"), readOnly, addr)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("docker-registry", "serve", filepath.Join(dir, "config.yml"))
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	kill := func() { once.Do(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }) }
	t.Cleanup(kill)
	for i := 0; i < 100; i++ {
		if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/v2/"); err == nil {
			resp.Body.Close()
			return addr, kill
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("registry on %s did not start", addr)
	return "", nil
}

func sleepTick() { time.Sleep(200 * time.Millisecond) }
