package restore

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestNetworkRace: podman's own message when netavark raced (captured on
// 4.3.1 with two restores at once on one host) is tried again; CRIU's and
// other netavark failures are not.
func TestNetworkRace(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		race bool
	}{
		{`podman: restoring the imported checkpoint: netavark (exit code 1): unable to append rule '-d 10.88.0.0/16 -j ACCEPT' to table 'nat': code: 1, msg: iptables: No chain/target/match by that name.`, true},
		{`podman: restoring the imported checkpoint: netavark (exit code 1): code: 1, msg: iptables: Chain already exists.`, true},
		{`podman: restoring the imported checkpoint: netavark (exit code 1): IO error: address already in use`, false},
		{`podman: restoring the imported checkpoint: criu failed: type RESTORE errno 0`, false},
		{`requested static ip 10.88.0.5 not in any subnet`, false},
	} {
		if got := networkRace(errors.New(tc.msg)); got != tc.race {
			t.Errorf("networkRace(%q) = %t, want %t", tc.msg, got, tc.race)
		}
	}
}

// TestRetryRestore: a network race is cleaned up and tried again, keeping
// what the next attempt needs; anything else, or the last try, is cleaned
// up for good and returned.
func TestRetryRestore(t *testing.T) {
	race := errors.New(`netavark (exit code 1): unable to append rule '-d 10.88.0.0/16 -j ACCEPT' to table 'nat': code: 1, msg: iptables: No chain/target/match by that name.`)
	criu := errors.New("criu failed: type RESTORE errno 0")
	now := func(int) <-chan time.Time { c := make(chan time.Time, 1); c <- time.Time{}; return c }
	for _, tc := range []struct {
		name    string
		results []error // one per attempt
		wantErr error
		undos   []bool // the last flag of each undo
	}{
		{"first try", []error{nil}, nil, nil},
		{"race, then restored", []error{race, nil}, nil, []bool{false}},
		{"race every time", []error{race, race, race}, race, []bool{false, false, true}},
		{"CRIU refuses: no retry", []error{criu}, criu, []bool{true}},
		{"race, then CRIU refuses", []error{race, criu}, criu, []bool{false, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tries int
			var undos []bool
			var log bytes.Buffer
			id, err := RetryRestore(context.Background(), func() (string, error) {
				err := tc.results[tries]
				tries++
				if err != nil {
					return "", err
				}
				return "abc", nil
			}, func(last bool) error {
				undos = append(undos, last)
				return nil
			}, &log, now)
			if !errors.Is(err, tc.wantErr) || (err == nil) != (id == "abc") {
				t.Fatalf("id %q, err %v; want err %v", id, err, tc.wantErr)
			}
			if tries != len(tc.results) || !slices.Equal(undos, tc.undos) {
				t.Fatalf("%d tries, undos %v; want %d, %v", tries, undos, len(tc.results), tc.undos)
			}
			if retried := strings.Count(log.String(), "restoring again"); retried != len(tc.undos)-boolInt(tc.wantErr != nil) {
				t.Fatalf("log says %d retries: %q", retried, log.String())
			}
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
