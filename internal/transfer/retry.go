package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"time"

	"github.com/containers/common/pkg/retry"
	"github.com/containers/image/v5/docker"
	"github.com/containers/image/v5/signature"
)

// DefaultRetries is how often a transient registry failure is retried, as
// podman push and pull do.
const DefaultRetries = 3

// withRetry runs copy.Image again after transient failures: what
// containers/common's pkg/retry (podman's own) counts as one (connection
// refused or reset, timeouts, registry error codes other than auth and
// unknown names), HTTP 5xx answers, 429, and a blob cut short.
func withRetry(ctx context.Context, o Options, op func() error) error {
	return retryIf(ctx, o, copyRetryable, op)
}

// Retry is withRetry for reads done outside copy.Image (the metadata a
// plan needs), where a short read may be the content's fault.
func Retry(ctx context.Context, o Options, op func() error) error {
	return retryIf(ctx, o, retryable, op)
}

// RetryIf is withRetry where op is more than a copy (a pull streamed into
// podman's restore, made again whole): again picks, from op's errors, the
// copy's transient failures.
func RetryIf(ctx context.Context, o Options, again func(error) bool, op func() error) error {
	return retryIf(ctx, o, again, op)
}

// Transient says whether a copy's failure is worth another try.
func Transient(err error) bool { return copyRetryable(err) }

// retryIf runs op again while again says its error is worth it.
//
// It is pkg/retry's IfNecessary loop, with the same backoff, reporting
// through o.Report: IfNecessary logs each retry through logrus as
// "… Error: …", which would break the rule that a failure prints exactly
// one Error: line.
func retryIf(ctx context.Context, o Options, again func(error) bool, op func() error) error {
	n := o.Retries
	if n == 0 {
		n = DefaultRetries
	}
	if n < 0 {
		n = 0
	}
	for attempt := 0; ; attempt++ {
		err := op()
		if err == nil || attempt >= n || ctx.Err() != nil || !again(err) || o.Again != nil && !o.Again() {
			return err
		}
		delay := o.RetryDelay
		if delay == 0 {
			delay = time.Duration(1<<(attempt+1)) * time.Second
		}
		if o.Report != nil {
			fmt.Fprintf(o.Report, "Transient failure, retrying in %s (%d/%d): %v\n", delay, attempt+1, n, err)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
	}
}

// permanent errors are never retried, whatever they wrap: fetching again
// gives the same answer, or the user asked to stop.
func permanent(err error) bool {
	var pre signature.PolicyRequirementError
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, ErrDigestMismatch) || errors.As(err, &pre)
}

func retryable(err error) bool {
	switch {
	case err == nil, permanent(err):
		return false
	case errors.Is(err, docker.ErrTooManyRequests):
		return true
	case strings.Contains(err.Error(), "received unexpected HTTP status: 5"):
		// containers/image has no exported type for it.
		return true
	}
	return retry.IsErrorRetryable(err)
}

// copyRetryable adds to retryable the blob whose connection dropped for
// good mid-body (containers/image gives up reconnecting with a bare
// io.ErrUnexpectedEOF, which pkg/retry does not count). Within copy.Image
// that is the network's doing: bad content shows as a digest mismatch.
func copyRetryable(err error) bool {
	return retryable(err) || err != nil && !permanent(err) && errors.Is(err, io.ErrUnexpectedEOF)
}

// preflightRetryable is what Preflight tries again: a transient failure
// that would otherwise fail it. A refused connection before the checkpoint
// is most likely a wrong address, and failing at once costs nothing.
func preflightRetryable(err error) bool {
	return preflightFatal(err) && retryable(err) && !errors.Is(err, syscall.ECONNREFUSED)
}
