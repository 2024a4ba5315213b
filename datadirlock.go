package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// lockFileName is the file in the data directory whose advisory lock says
// which process serves from it; it holds that process's id.
const lockFileName = "platform-api.lock"

// lockDataDir takes the data directory for this process, for as long as it
// runs: two servers on one SQLite database would each deliver only to the
// gateways connected to it, so a deploy through one to a gateway on the
// other would stay PENDING for ever. A second process finding the lock
// held refuses to start, naming the holder. The lock is flock(2): the
// kernel drops it when the process ends, however it ends, so a crash never
// leaves a stale lock (the file stays, with the last holder's id). release
// unlocks.
func lockDataDir(dir string) (release func(), err error) {
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("PLATFORM_DATA_DIR: lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "another platform-api"
			data := make([]byte, 32)
			n, _ := f.ReadAt(data, 0)
			if pid, err := strconv.Atoi(strings.TrimSpace(string(data[:n]))); err == nil && pid > 0 {
				holder += fmt.Sprintf(" (pid %d)", pid)
			}
			return nil, fmt.Errorf("data directory %s is in use by %s; stop it or use another PLATFORM_DATA_DIR", dir, holder)
		}
		return nil, fmt.Errorf("PLATFORM_DATA_DIR: lock %s: %w", path, err)
	}
	release = func() { f.Close() } // closing unlocks
	if err := f.Truncate(0); err != nil {
		release()
		return nil, fmt.Errorf("PLATFORM_DATA_DIR: write %s: %w", path, err)
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		release()
		return nil, fmt.Errorf("PLATFORM_DATA_DIR: write %s: %w", path, err)
	}
	return release, nil
}
