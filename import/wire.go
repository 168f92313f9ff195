package restore

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/podman-migrate/podman-migrate/internal/fault"
)

// ErrBadCompress is wrapped when --compress is not auto, none, zstd or
// zstd:LEVEL.
var ErrBadCompress = fault.New(fault.Usage, "invalid --compress")

// Wire says how the archive travels to the target's podman. podman
// decompresses what its restore import is sent (4.3.1 and 5.x untar it
// with the storage library, which detects zstd): across a network the
// bytes cost more than the CPU, on a local socket the reverse.
type Wire struct {
	Zstd  bool
	Level zstd.EncoderLevel
	// Adaptive: each segment compressed or stored, as measured (auto).
	Adaptive bool
}

// String is how results name it: "none", "auto" or "zstd:LEVEL".
func (w Wire) String() string {
	switch {
	case w.Adaptive:
		return "auto"
	case !w.Zstd:
		return "none"
	}
	return "zstd:" + strconv.Itoa(zstdLevel(w.Level))
}

// zstdLevel is the zstd level an encoder level stands for.
func zstdLevel(l zstd.EncoderLevel) int {
	switch l {
	case zstd.SpeedFastest:
		return 1
	case zstd.SpeedDefault:
		return 3
	case zstd.SpeedBetterCompression:
		return 7
	}
	return 11
}

// DefaultWireLevel is zstd's fastest: half a checkpoint is usually random
// memory, which no level shrinks.
const DefaultWireLevel = 1

// ChooseWire turns --compress into the compression for the target at
// address: auto measures, segment by segment, whether compressing pays
// for tcp:// and ssh:// (adaptive), and sends a unix:// socket the
// archive as it is.
func ChooseWire(spec, address string) (Wire, error) {
	switch s := strings.TrimSpace(spec); {
	case s == "" || s == "auto":
		if strings.HasPrefix(address, "tcp://") || strings.HasPrefix(address, "ssh://") {
			return Wire{Zstd: true, Level: zstd.EncoderLevelFromZstd(DefaultWireLevel), Adaptive: true}, nil
		}
		return Wire{}, nil
	case s == "none":
		return Wire{}, nil
	case s == "zstd":
		return Wire{Zstd: true, Level: zstd.EncoderLevelFromZstd(DefaultWireLevel)}, nil
	case strings.HasPrefix(s, "zstd:"):
		n, err := strconv.Atoi(strings.TrimPrefix(s, "zstd:"))
		if err != nil || n < 1 || n > 22 {
			return Wire{}, fmt.Errorf("%w %q: want a zstd level from 1 to 22", ErrBadCompress, spec)
		}
		return Wire{Zstd: true, Level: zstd.EncoderLevelFromZstd(n)}, nil
	}
	return Wire{}, fmt.Errorf("%w %q: want auto, none, zstd or zstd:LEVEL", ErrBadCompress, spec)
}

// wireWriter is the archive's way onto the wire: Close flushes it (not
// the writer below), Report says what it did.
type wireWriter interface {
	io.WriteCloser
	Report() string
}

// writer wraps w in the wire's compression.
func (wr Wire) writer(w io.Writer) (wireWriter, error) {
	switch {
	case wr.Adaptive:
		return newAdaptive(w, wr.Level)
	case wr.Zstd:
		zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(wr.Level))
		if err != nil {
			return nil, err
		}
		return fixed{zw, wr.String()}, nil
	}
	return fixed{nopCloser{w}, wr.String()}, nil
}

type fixed struct {
	io.WriteCloser
	name string
}

func (f fixed) Report() string { return f.name }

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
