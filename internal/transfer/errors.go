package transfer

import (
	"errors"
	"fmt"
	"strings"

	"github.com/containers/image/v5/signature"

	"github.com/podman-migrate/podman-migrate/internal/fault"
)

// ErrDigestMismatch is wrapped when content does not match the digest that
// names it: the image was altered in the registry or on the way. It is bad
// input, not a transport failure; fetching it again gives the same bytes.
var ErrDigestMismatch = fault.Hinted(fault.New(fault.Input, "content does not match its digest"),
	"the image was altered in the registry or on the way; push it again")

// policyHint is the fix for an image the signature policy refused.
const policyHint = "the signature policy (policy.json) refused the image: sign it, or trust its registry in the policy"

// digestMismatchText is how containers/image v5.29 words a digest mismatch:
// it has no typed error for one. TestClassifyRealMismatch pins the blob
// case to the library by making one.
var digestMismatchText = []string{
	"Digest did not match, expected",                   // copy: a blob
	"Manifest does not match provided manifest digest", // a manifest fetched by digest
	"Image manifest does not match selected manifest digest",
	"config.json digest", // "Download config.json digest … does not match expected …"
}

// classify wraps err with the kind of failure it is: a refusal by the
// signature policy, or (where containers/image gives only text) a digest
// mismatch, is bad input, not the transport's failure, so that callers (and
// exit codes) need not know the types or text.
func classify(err error) error {
	if err == nil || fault.KindOf(err) >= fault.Input {
		return err // classified already, or the user's own fault
	}
	var pre signature.PolicyRequirementError
	if errors.As(err, &pre) {
		// The content is not trusted: bad input, for good.
		return &fault.Error{Kind: fault.Input, Hint: policyHint, Err: err}
	}
	msg := err.Error()
	for _, s := range digestMismatchText {
		if strings.Contains(msg, s) && (s != "config.json digest" || strings.Contains(msg, "does not match")) {
			return fmt.Errorf("%w: %w", ErrDigestMismatch, err)
		}
	}
	return err
}
