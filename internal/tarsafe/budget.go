package tarsafe

import (
	"archive/tar"
	"fmt"
	"io"

	"github.com/docker/go-units"

	"github.com/podman-migrate/podman-migrate/internal/fault"
)

// ErrTooLarge is wrapped when an archive grows past its Limits: a
// compression bomb, or an archive of millions of entries. Such errors are
// ErrUnsafe too.
var ErrTooLarge = fault.Hinted(fault.New(fault.Input, "archive exceeds its limits"),
	"if the image is genuine and this large, raise --max-layer-size or --max-layer-entries")

// Limits bound what an archive may expand to, so that a small hostile blob
// cannot use up memory, disk or time. A zero field is no bound.
type Limits struct {
	// MaxBytes bounds the bytes read through Budget.Reader, and the sum of
	// the entries' sizes (a sparse entry's logical size).
	MaxBytes int64
	// MaxEntries bounds the entries, counting those of the archives
	// nested inside (Budget.Nested).
	MaxEntries int64
}

// LimitError says which limit an archive went past.
type LimitError struct {
	// What is "bytes" or "entries".
	What  string
	Limit int64
}

func (e *LimitError) Error() string {
	if e.What == "entries" {
		return fmt.Sprintf("holds more than %d archive entries, the limit", e.Limit)
	}
	return fmt.Sprintf("expands to more than %s, the size limit", units.BytesSize(float64(e.Limit)))
}

// Unwrap makes errors.Is hold for both ErrTooLarge and ErrUnsafe.
func (e *LimitError) Unwrap() []error { return []error{ErrTooLarge, ErrUnsafe} }

// Budget counts one archive against Limits while it is read. Its methods
// accept a nil Budget, which has no bounds.
type Budget struct {
	lim      Limits
	read     int64
	declared int64
	entries  *int64 // shared with the budgets of nested archives
}

// NewBudget returns the budget of one archive.
func NewBudget(l Limits) *Budget {
	return &Budget{lim: l, entries: new(int64)}
}

// Nested returns the budget of an archive stored inside this one: its sizes
// are bounded on their own (its bytes are already within this archive's),
// its entries count towards this archive's.
func (b *Budget) Nested() *Budget {
	if b == nil {
		return nil
	}
	return &Budget{lim: b.lim, entries: b.entries}
}

// Entry counts one entry and its size.
func (b *Budget) Entry(h *tar.Header) error {
	if b == nil {
		return nil
	}
	*b.entries++
	if b.lim.MaxEntries > 0 && *b.entries > b.lim.MaxEntries {
		return &LimitError{What: "entries", Limit: b.lim.MaxEntries}
	}
	if b.lim.MaxBytes > 0 {
		// Compare before adding: a hostile size must not overflow the sum.
		if h.Size < 0 || h.Size > b.lim.MaxBytes-b.declared {
			return &LimitError{What: "bytes", Limit: b.lim.MaxBytes}
		}
		b.declared += h.Size
	}
	return nil
}

// Reader returns r counting what is read through it: once more than
// MaxBytes have come through, it fails with a LimitError.
func (b *Budget) Reader(r io.Reader) io.Reader {
	if b == nil || b.lim.MaxBytes <= 0 {
		return r
	}
	return &budgetReader{r: r, b: b}
}

type budgetReader struct {
	r io.Reader
	b *Budget
}

func (br *budgetReader) Read(p []byte) (int, error) {
	// One byte past the limit is enough to know it is exceeded.
	if left := br.b.lim.MaxBytes - br.b.read + 1; int64(len(p)) > left {
		p = p[:left]
	}
	n, err := br.r.Read(p)
	br.b.read += int64(n)
	if br.b.read > br.b.lim.MaxBytes {
		return n, &LimitError{What: "bytes", Limit: br.b.lim.MaxBytes}
	}
	return n, err
}
