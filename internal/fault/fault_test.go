package fault

import (
	"errors"
	"fmt"
	"testing"
)

// typed is an error type of another package that knows its kind and fix.
type typed struct {
	kind Kind
	hint string
	err  error
}

func (e *typed) Error() string { return "typed: " + e.err.Error() }
func (e *typed) Unwrap() error { return e.err }
func (e *typed) Kind() Kind    { return e.kind }
func (e *typed) Hint() string  { return e.hint }

// hiding hides its cause from Unwrap but lends it to errors.As, as
// ckpt's badLayer does.
type hiding struct{ err error }

func (e *hiding) Error() string        { return e.err.Error() }
func (e *hiding) As(target any) bool   { return errors.As(e.err, target) }
func (e *hiding) Is(target error) bool { return errors.Is(e.err, target) }

// selfish hands back itself when asked for any error.
type selfish struct{}

func (e *selfish) Error() string { return "selfish" }
func (e *selfish) As(target any) bool {
	if p, ok := target.(*error); ok {
		*p = e
		return true
	}
	return false
}

var (
	errInput  = New(Input, "bad input")
	errPodman = New(Podman, "podman failed")
	errHinted = Hinted(New(Registry, "registry failed"), "log in")
)

func TestKindOf(t *testing.T) {
	plain := errors.New("plain")
	for _, tc := range []struct {
		name string
		err  error
		want Kind
	}{
		{"nil", nil, Unknown},
		{"plain", plain, Unknown},
		{"sentinel", errInput, Input},
		{"wrapped sentinel", fmt.Errorf("pushing: %w", errInput), Input},
		{"Wrap", Wrap(Usage, plain), Usage},
		{"Wrap of nil", Wrap(Usage, nil), Unknown},
		{"hinted sentinel keeps its kind", fmt.Errorf("x: %w", errHinted), Registry},
		{"Hinted alone has no kind", Hinted(plain, "h"), Unknown},
		{"OnSide keeps the kind within", OnSide(Target, errPodman), Podman},
		{"type's Kind", &typed{kind: Registry, err: plain}, Registry},
		{"highest of a chain", &typed{kind: Podman, err: fmt.Errorf("a: %w", errInput)}, Input},
		{"highest of a chain, outer higher", Wrap(Interrupted, &typed{kind: Podman, err: errInput}), Interrupted},
		{"joined", errors.Join(errPodman, plain, errInput), Input},
		{"joined, nested", fmt.Errorf("2 failed: %w", errors.Join(fmt.Errorf("a: %w", errPodman), fmt.Errorf("b: %w", errors.Join(plain, Wrap(Usage, plain))))), Usage},
		{"two %w", fmt.Errorf("%w: %w", errPodman, errHinted), Registry},
		{"hidden from Unwrap, lent to As", fmt.Errorf("x: %w", &hiding{fmt.Errorf("y: %w", errInput)}), Input},
		{"As hands back itself", &selfish{}, Unknown},
	} {
		if got := KindOf(tc.err); got != tc.want {
			t.Errorf("%s: KindOf = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestHintOf(t *testing.T) {
	plain := errors.New("plain")
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"plain", plain, ""},
		{"kind, no hint", errInput, ""},
		{"hinted sentinel", errHinted, "log in"},
		{"wrapped", fmt.Errorf("a: %w", fmt.Errorf("b: %w", errHinted)), "log in"},
		{"outermost wins", Hinted(fmt.Errorf("a: %w", errHinted), "outer"), "outer"},
		{"empty hint leaves err", Hinted(plain, ""), ""},
		{"empty outer hint looks within", Hinted(Hinted(plain, "inner"), ""), "inner"},
		{"type's Hint", &typed{hint: "type", err: errHinted}, "type"},
		{"type's empty Hint looks within", &typed{err: errHinted}, "log in"},
		{"joined: first branch with a hint", errors.Join(errInput, Hinted(plain, "second"), Hinted(plain, "third")), "second"},
		{"joined, nested", fmt.Errorf("x: %w", errors.Join(plain, fmt.Errorf("y: %w", errors.Join(errPodman, errHinted)))), "log in"},
		{"hidden from Unwrap, lent to As", &hiding{fmt.Errorf("y: %w", errHinted)}, "log in"},
		{"Wrap and OnSide keep it", Wrap(Interrupted, OnSide(Source, errHinted)), "log in"},
	} {
		if got := HintOf(tc.err); got != tc.want {
			t.Errorf("%s: HintOf = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestSideOf(t *testing.T) {
	plain := errors.New("plain")
	for _, tc := range []struct {
		name string
		err  error
		want Side
	}{
		{"nil", nil, ""},
		{"none", fmt.Errorf("a: %w", errInput), ""},
		{"OnSide", OnSide(Source, plain), Source},
		{"OnSide of nil", OnSide(Source, nil), ""},
		{"wrapped", fmt.Errorf("moving: %w", OnSide(Target, errPodman)), Target},
		{"outermost wins", OnSide(Source, fmt.Errorf("a: %w", OnSide(Target, plain))), Source},
		{"Error's own Side", &Error{Kind: Podman, Side: Target, Err: plain}, Target},
		{"joined", errors.Join(plain, OnSide(Target, plain), OnSide(Source, plain)), Target},
		{"joined, nested", fmt.Errorf("x: %w", errors.Join(errPodman, fmt.Errorf("y: %w", OnSide(Source, errInput)))), Source},
	} {
		if got := SideOf(tc.err); got != tc.want {
			t.Errorf("%s: SideOf = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestSentinelIdentity(t *testing.T) {
	err := fmt.Errorf("a: %w", Hinted(OnSide(Source, Wrap(Podman, errInput)), "h"))
	if !errors.Is(err, errInput) {
		t.Error("errors.Is lost the sentinel")
	}
	if errors.Is(err, New(Input, "bad input")) {
		t.Error("two sentinels with the same message are the same error")
	}
	if got := err.Error(); got != "a: bad input" {
		t.Errorf("message %q, want the sentinel's own", got)
	}
	var fe *Error
	if !errors.As(err, &fe) || fe.Hint != "h" {
		t.Errorf("errors.As found %+v, want the outermost *Error", fe)
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{Unknown: "unknown", Podman: "podman", Registry: "registry", Input: "input", Usage: "usage", Interrupted: "interrupted", Kind(9): "Kind(9)"} {
		if got := k.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(k), got, want)
		}
	}
}
