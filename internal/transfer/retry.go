package transfer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/containers/common/pkg/retry"
	"github.com/containers/image/v5/docker"
	"github.com/containers/image/v5/signature"
)

// DefaultRetries is how often a transient registry failure is retried, as
// podman push and pull do.
const DefaultRetries = 3

// withRetry runs op again after transient failures: what containers/common's
// pkg/retry (podman's own) counts as one (connection refused or reset,
// timeouts, registry error codes other than auth and unknown names), HTTP
// 5xx answers and 429. Auth refusals, missing images, digest mismatches and
// policy rejections are permanent.
func withRetry(ctx context.Context, o Options, op func() error) error {
	return Retry(ctx, o, op)
}

// Retry is withRetry for reads done outside copy.Image (the metadata a
// plan needs).
func Retry(ctx context.Context, o Options, op func() error) error {
	n := o.Retries
	if n == 0 {
		n = DefaultRetries
	}
	if n < 0 {
		n = 0
	}
	// pkg/retry's own loop logs "… Error: …" lines through logrus, which
	// would break the one-Error-line contract; this loop reports through
	// the progress writer instead, with the same backoff.
	for attempt := 0; ; attempt++ {
		err := op()
		if err == nil || attempt >= n || !retryable(err) {
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

func retryable(err error) bool {
	var pre signature.PolicyRequirementError
	switch {
	case err == nil, errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, ErrDigestMismatch), errors.As(err, &pre):
		return false
	case errors.Is(err, docker.ErrTooManyRequests):
		return true
	case strings.Contains(err.Error(), "received unexpected HTTP status: 5"):
		// containers/image has no exported type for it.
		return true
	}
	return retry.IsErrorRetryable(err)
}
