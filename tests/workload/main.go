// Command workload is the process the end-to-end tests and the benchmark
// migrate. It keeps state that only survives a real checkpoint/restore: a
// counter in memory, a boot nonce drawn at start, and a memory region whose
// checksum it recomputes from the bytes themselves. A restart instead of a
// restore shows up as a new boot nonce and a counter back at zero.
package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Status is what the workload writes to its status file on every tick.
type Status struct {
	Boot       string `json:"boot"`
	Counter    uint64 `json:"counter"`
	InitialSum string `json:"initial_sum"`
	Sum        string `json:"sum"`
	SumAt      uint64 `json:"sum_at"`
	MemMiB     int    `json:"mem_mib"`
}

func main() {
	memMiB := flag.Int("mem", 16, "MiB of memory to hold")
	dir := flag.String("dir", "/workload", "directory for the status file (in the root filesystem)")
	tick := flag.Duration("tick", 100*time.Millisecond, "counter interval")
	sumEvery := flag.Int("sum-every", 10, "recompute the memory checksum every N ticks (0: never)")
	cat := flag.String("cat", "", "print this file and exit: the status reader for images without cat")
	flag.Parse()
	if *cat != "" {
		b, err := os.ReadFile(*cat)
		if err != nil {
			fmt.Fprintln(os.Stderr, "workload:", err)
			os.Exit(1)
		}
		os.Stdout.Write(b)
		return
	}

	// run only returns on failure: the workload runs until it is killed.
	fmt.Fprintln(os.Stderr, "workload:", run(*memMiB, *dir, *tick, *sumEvery))
	os.Exit(1)
}

func run(memMiB int, dir string, tick time.Duration, sumEvery int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	nonce := make([]byte, 8)
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	// Half random (incompressible), half a repeating pattern (compressible).
	mem := make([]byte, memMiB<<20)
	half := len(mem) / 2
	if _, err := rand.Read(mem[:half]); err != nil {
		return err
	}
	for i := half; i < len(mem); i++ {
		mem[i] = byte(i % 251)
	}
	st := Status{Boot: hex.EncodeToString(nonce), MemMiB: memMiB}
	st.InitialSum = checksum(mem)
	st.Sum = st.InitialSum
	if err := os.WriteFile(filepath.Join(dir, "started"), []byte(st.Boot+"\n"), 0o644); err != nil {
		return err
	}
	for {
		st.Counter++
		if sumEvery > 0 && st.Counter%uint64(sumEvery) == 0 {
			st.Sum, st.SumAt = checksum(mem), st.Counter
		}
		if err := writeStatus(dir, &st); err != nil {
			return err
		}
		if st.Counter%50 == 0 {
			fmt.Printf("counter=%d boot=%s\n", st.Counter, st.Boot)
		}
		time.Sleep(tick)
	}
}

func checksum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// writeStatus replaces the file atomically so a reader never sees half of it.
func writeStatus(dir string, st *Status) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, ".status.tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "status"))
}
