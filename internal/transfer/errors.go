package transfer

import (
	"errors"
	"fmt"
	"strings"
)

// ErrDigestMismatch is wrapped when content does not match the digest that
// names it: the image was altered in the registry or on the way. It is bad
// input, not a transport failure; fetching it again gives the same bytes.
var ErrDigestMismatch = errors.New("content does not match its digest")

// digestMismatchText is how containers/image v5.29 words a digest mismatch:
// it has no typed error for one. TestClassifyRealMismatch pins the blob
// case to the library by making one.
var digestMismatchText = []string{
	"Digest did not match, expected",                   // copy: a blob
	"Manifest does not match provided manifest digest", // a manifest fetched by digest
	"Image manifest does not match selected manifest digest",
	"config.json digest", // "Download config.json digest … does not match expected …"
}

// classify wraps err with the kind of failure the message says it is, where
// containers/image gives only text, so that callers (and exit codes) need
// not know that text.
func classify(err error) error {
	if err == nil || errors.Is(err, ErrDigestMismatch) {
		return err
	}
	msg := err.Error()
	for _, s := range digestMismatchText {
		if strings.Contains(msg, s) && (s != "config.json digest" || strings.Contains(msg, "does not match")) {
			return fmt.Errorf("%w: %w", ErrDigestMismatch, err)
		}
	}
	return err
}
