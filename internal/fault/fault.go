// Package fault gives errors a kind (what failed: podman, the registry, the
// input, the user's interrupt) and a side (the source or the target host),
// decided where the error is born, so that the CLI picks an exit code and a
// hint with one switch instead of knowing every package's sentinels.
package fault

import (
	"errors"
	"fmt"
)

// Kind is what failed; each kind has one exit code.
type Kind int

// The kinds, in the order KindOf prefers them when an error holds several.
const (
	Unknown     Kind = iota // nothing said: exit 1
	Podman                  // the podman service, its runtime or CRIU
	Registry                // the registry or image transport
	Input                   // what the user gave: container, image, map, file
	Usage                   // the command line
	Interrupted             // SIGINT or SIGTERM
)

var kindNames = [...]string{"unknown", "podman", "registry", "input", "usage", "interrupted"}

// String is the kind's name: "podman", "input", ….
func (k Kind) String() string {
	if k < 0 || int(k) >= len(kindNames) {
		return fmt.Sprintf("Kind(%d)", int(k))
	}
	return kindNames[k]
}

// Side is the host whose part failed, where that is not obvious.
type Side string

// The sides of a move (push and pull have one host each).
const (
	Source Side = "source"
	Target Side = "target"
)

// Error is an error with its kind, side and hint. Its message is Err's:
// the kind decides the exit code, the hint is printed after the message.
type Error struct {
	Kind Kind
	Side Side
	Hint string
	Err  error
}

// Error is Err's message: kind, side and hint do not change what is printed.
func (e *Error) Error() string { return e.Err.Error() }

// Unwrap is Err, so that errors.Is and errors.As see through e.
func (e *Error) Unwrap() error { return e.Err }

// New is errors.New for a sentinel of kind k: errors.Is finds it by
// identity, KindOf by its kind.
func New(k Kind, msg string) error { return &Error{Kind: k, Err: errors.New(msg)} }

// Wrap gives err kind k (nil stays nil).
func Wrap(k Kind, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Kind: k, Err: err}
}

// Hinted gives err a hint: the fix, when it is known where err is born.
// An empty hint leaves err as it is.
func Hinted(err error, hint string) error {
	if err == nil || hint == "" {
		return err
	}
	return &Error{Err: err, Hint: hint}
}

// OnSide says which host err happened on (nil stays nil).
func OnSide(s Side, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Side: s, Err: err}
}

// kinded is an error type of another package that knows its kind.
type kinded interface{ Kind() Kind }

// hinted is an error type of another package that knows its fix.
type hinted interface{ Hint() string }

// KindOf is the kind of err: of all the kinds its tree holds (joined errors
// included), the last in the order above, so that an interrupt or a bad
// input is not reported as the podman failure it caused.
func KindOf(err error) Kind {
	best := Unknown
	walk(err, func(e error) bool {
		k := Unknown
		switch v := e.(type) {
		case *Error:
			k = v.Kind
		case kinded:
			k = v.Kind()
		}
		if k > best {
			best = k
		}
		return true
	})
	return best
}

// SideOf is the outermost side err names, "" when none does.
func SideOf(err error) Side {
	var s Side
	walk(err, func(e error) bool {
		if v, ok := e.(*Error); ok && v.Side != "" {
			s = v.Side
			return false
		}
		return true
	})
	return s
}

// HintOf is the outermost hint in err, "" when there is none.
func HintOf(err error) string {
	var h string
	walk(err, func(e error) bool {
		switch v := e.(type) {
		case *Error:
			h = v.Hint
		case hinted:
			h = v.Hint()
		}
		return h == ""
	})
	return h
}

// maxDepth bounds walk, against an error whose As hands back itself.
const maxDepth = 100

// walk calls fn on err and everything it wraps, depth first, until fn
// returns false.
func walk(err error, fn func(error) bool) bool { return walkFrom(err, fn, 0) }

func walkFrom(err error, fn func(error) bool, depth int) bool {
	if err == nil || depth > maxDepth {
		return true
	}
	if !fn(err) {
		return false
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return walkFrom(u.Unwrap(), fn, depth+1)
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if !walkFrom(e, fn, depth+1) {
				return false
			}
		}
	case interface{ As(any) bool }:
		// An error that hides its cause from Unwrap (to keep some
		// errors.Is answers false) but lends it to errors.As: asked for
		// any error at all, errors.As hands over the cause itself.
		var cause error
		if u.As(&cause) {
			return walkFrom(cause, fn, depth+1)
		}
	}
	return true
}
