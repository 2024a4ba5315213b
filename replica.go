package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"platform-api/store"
)

// replicaID is this process's replica id when PLATFORM_REPLICA_ID is not
// set: the one kept in the data directory, locked while the process runs.
// A replica restarted after a crash so takes back its id, and with it
// clears what its previous life left (its gateways' connections would
// otherwise count as live until its lease expired). A second process on
// the same data directory, finding the id taken, runs under a new one of
// its own. release unlocks the id.
func replicaID(dataDir string) (id string, release func(), err error) {
	path := filepath.Join(dataDir, "replica-id")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return "", nil, fmt.Errorf("replica id: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return store.DefaultReplicaID(), func() {}, nil // the id is another process's
		}
		return "", nil, fmt.Errorf("replica id: lock %s: %w", path, err)
	}
	release = func() { f.Close() } // closing unlocks
	data := make([]byte, 256)
	n, _ := f.ReadAt(data, 0)
	if id = strings.TrimSpace(string(data[:n])); id != "" {
		return id, release, nil
	}
	id = store.DefaultReplicaID()
	if _, err := f.WriteAt([]byte(id+"\n"), 0); err != nil {
		release()
		return "", nil, fmt.Errorf("replica id: write %s: %w", path, err)
	}
	return id, release, f.Sync()
}
