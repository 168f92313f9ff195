package ckpt

import (
	"fmt"
	"strconv"
)

// Options are the CRIU options a checkpoint was taken with. A restore must
// use the same ones: CRIU restores established connections and file locks
// only when told to, as at the dump.
type Options struct {
	TCPEstablished bool
	FileLocks      bool
	// LeaveRunning records that the source kept running (a copy).
	LeaveRunning bool
	// TCPClose records that the pusher chose to have the connections
	// closed on restore (push --tcp-close): those to peers outside the
	// container or pod cannot be restored on another host.
	TCPClose bool
}

// ToAnnotations returns the manifest annotations that record o. TCPClose
// is recorded only when set: images without it read as before.
func (o Options) ToAnnotations() map[string]string {
	a := map[string]string{
		AnnTCPEstablished: strconv.FormatBool(o.TCPEstablished),
		AnnFileLocks:      strconv.FormatBool(o.FileLocks),
		AnnLeaveRunning:   strconv.FormatBool(o.LeaveRunning),
	}
	if o.TCPClose {
		a[AnnTCPClose] = "true"
	}
	return a
}

// OptionsFromAnnotations reads the options back from manifest annotations.
// A missing key means false (podman's own images record none); a value
// that is not a boolean is an error, since guessing could restore a
// checkpoint with the wrong CRIU options.
func OptionsFromAnnotations(a map[string]string) (Options, error) {
	var o Options
	for key, dst := range map[string]*bool{
		AnnTCPEstablished: &o.TCPEstablished,
		AnnFileLocks:      &o.FileLocks,
		AnnLeaveRunning:   &o.LeaveRunning,
		AnnTCPClose:       &o.TCPClose,
	} {
		v, ok := a[key]
		if !ok {
			continue
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return Options{}, fmt.Errorf("%w: annotation %s=%q is not a boolean", ErrNotCheckpoint, key, v)
		}
		*dst = b
	}
	return o, nil
}
