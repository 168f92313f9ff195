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
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
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
	// With -peer: the peer's boot and counter as last read, and how many
	// reads succeeded.
	PeerBoot    string `json:"peer_boot,omitempty"`
	PeerCounter uint64 `json:"peer_counter,omitempty"`
	PeerReads   uint64 `json:"peer_reads,omitempty"`
}

func main() {
	memMiB := flag.Int("mem", 16, "MiB of memory to hold")
	dir := flag.String("dir", "/workload", "directory for the status file (in the root filesystem)")
	tick := flag.Duration("tick", 100*time.Millisecond, "counter interval")
	sumEvery := flag.Int("sum-every", 10, "recompute the memory checksum every N ticks (0: never)")
	cat := flag.String("cat", "", "print this file and exit: the status reader for images without cat")
	serve := flag.String("serve", "", "serve the status as JSON over HTTP on this address (a pod's port)")
	peer := flag.String("peer", "", "read a -serve peer's status at this URL every tick (a pod's localhost)")
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
	fmt.Fprintln(os.Stderr, "workload:", run(*memMiB, *dir, *tick, *sumEvery, *serve, *peer))
	os.Exit(1)
}

func run(memMiB int, dir string, tick time.Duration, sumEvery int, serve, peer string) error {
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
	var mu sync.Mutex
	if serve != "" {
		ln, err := net.Listen("tcp", serve)
		if err != nil {
			return err
		}
		go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			mu.Lock()
			b, _ := json.Marshal(st)
			mu.Unlock()
			w.Write(b)
		}))
	}
	// A connection per read: none stays open between ticks.
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for {
		mu.Lock()
		st.Counter++
		if sumEvery > 0 && st.Counter%uint64(sumEvery) == 0 {
			st.Sum, st.SumAt = checksum(mem), st.Counter
		}
		mu.Unlock()
		if peer != "" {
			if p, err := readPeer(client, peer); err == nil {
				mu.Lock()
				st.PeerBoot, st.PeerCounter = p.Boot, p.Counter
				st.PeerReads++
				mu.Unlock()
			}
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

func readPeer(c *http.Client, url string) (*Status, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var p Status
	return &p, json.NewDecoder(resp.Body).Decode(&p)
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
