package main

import "time"

// defaultCRIUTimeout bounds a checkpoint or restore: CRIU < 4.2 hangs
// forever on VM guests whose hardware breakpoints never fire.
const defaultCRIUTimeout = 10 * time.Minute

const checkpointTimeoutHelp = "bound the wait for podman's checkpoint (0: none); then CRIU is ended when the service is on this machine (else the error names the command to run there), the container resumes, and the exit code is 3"

const restoreTimeoutHelp = "bound podman's restore (0: none); then CRIU is ended when the service is on this machine, the half-made container is removed, and the exit code is 3"
