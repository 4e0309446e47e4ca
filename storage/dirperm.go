package storage

import (
	"fmt"
	"log/slog"
	"os"
)

// DirMode is the mode of every data directory a server opens: its owner's
// only. The controller's store holds the bcrypt hashes of the users'
// passwords and the seed of the key that signs tokens (in its state, its
// raft log and its snapshots); Pebble creates its directory 0755 and its
// files 0644 (under umask 022), which every local user could read. A
// directory of mode 0700 keeps them out whatever the files' modes (etcd
// creates and checks its data directories so too).
const DirMode os.FileMode = 0o700

// SecureDir creates dir (and any missing parent) with DirMode, or, when dir
// exists and its group or others may access it, narrows it to DirMode,
// warning on log (nil: slog.Default).
func SecureDir(dir string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, DirMode); err != nil {
		return fmt.Errorf("data directory %s: %w", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("data directory %s: not a directory", dir)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		if err := os.Chmod(dir, DirMode); err != nil {
			return fmt.Errorf("data directory %s: narrow mode %#o to %#o: %w", dir, perm, DirMode, err)
		}
		if log == nil {
			log = slog.Default()
		}
		log.Warn("data directory was accessible to other users: narrowed its mode", "dir", dir, "was", fmt.Sprintf("%#o", perm), "now", fmt.Sprintf("%#o", DirMode))
	}
	return nil
}
