package progress

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is written by the Waiting's goroutine and read by the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls until out contains want, failing after a generous bound.
func waitFor(t *testing.T, out *syncBuffer, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if strings.Contains(out.String(), want) {
			return
		}
	}
	t.Fatalf("output %q never contained %q", out.String(), want)
}

func TestWaitingPlainLinesAndOneWarning(t *testing.T) {
	var out syncBuffer
	warned := 0
	p := startWaiting(&out, "Checkpointing container web (abc)", WaitOptions{
		Stall: 20 * time.Millisecond,
		Warn: func(d time.Duration) string {
			warned++
			return fmt.Sprintf("the checkpoint has taken %s", d)
		},
	}, false, 10*time.Millisecond)
	waitFor(t, &out, "Warning: the checkpoint has taken")
	waitFor(t, &out, "Checkpointing container web (abc): 0s\n")
	p.Note("Interrupted")
	p.Stop()
	p.Stop()
	s := out.String()
	if !strings.HasPrefix(s, "Checkpointing container web (abc)\n") {
		t.Errorf("plain output starts %q, want the label on a line of its own", s)
	}
	if strings.Contains(s, "\r") || strings.Contains(s, "\x1b") {
		t.Errorf("plain output has redraws: %q", s)
	}
	if warned != 1 || strings.Count(s, "Warning:") != 1 {
		t.Errorf("warned %d times in %q, want once", warned, s)
	}
	if !strings.HasSuffix(s, "Interrupted\n") {
		t.Errorf("output %q does not end with the note", s)
	}
}

func TestWaitingTerminalRedrawsInPlace(t *testing.T) {
	var out syncBuffer
	p := startWaiting(&out, "Checkpointing container web (abc)", WaitOptions{
		Stall: 20 * time.Millisecond,
		Warn:  func(time.Duration) string { return "slow" },
	}, true, 5*time.Millisecond)
	waitFor(t, &out, "Warning: slow\n")
	p.Stop()
	s := out.String()
	if !strings.HasPrefix(s, "\rCheckpointing container web (abc): 0s\x1b[K") {
		t.Errorf("terminal output starts %q, want a redrawn line", s)
	}
	if !strings.Contains(s, "\r\x1b[KWarning: slow\n\rCheckpointing") {
		t.Errorf("the warning must clear the line and the line come back: %q", s)
	}
	if !strings.HasSuffix(s, "\x1b[K\n") {
		t.Errorf("Stop must complete the line: %q", s)
	}
}

func TestWaitingWithoutStallNeverWarns(t *testing.T) {
	var out syncBuffer
	p := startWaiting(&out, "Waiting", WaitOptions{}, false, time.Millisecond)
	waitFor(t, &out, "Waiting: 0s\n")
	p.Stop()
	if strings.Contains(out.String(), "Warning") {
		t.Errorf("warned without a stall setting: %q", out.String())
	}
}
