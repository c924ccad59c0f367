package cache

import (
	"io"
	"os"
	"sync"
)

// countingWriter passes writes on and reports the running total.
type countingWriter struct {
	w      io.Writer
	n      int64
	report func(int64)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.report(c.n)
	return n, err
}

// countingFile reads a file for an upload and reports how many bytes the
// uploader has taken, capped at size (a retried part is read again). It
// keeps the file's ReadAt and Seek, so an S3 client still uploads parts
// in parallel and can rewind for a retry.
type countingFile struct {
	f      *os.File
	size   int64
	report func(int64)
	mu     sync.Mutex
	n      int64
}

// add counts n more bytes; the report is made under the lock, so totals
// arrive in order even from parallel part uploads.
func (c *countingFile) add(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n = min(c.n+int64(n), c.size)
	c.report(c.n)
}

func (c *countingFile) Read(b []byte) (int, error) {
	n, err := c.f.Read(b)
	c.add(n)
	return n, err
}

func (c *countingFile) ReadAt(b []byte, off int64) (int, error) {
	n, err := c.f.ReadAt(b, off)
	c.add(n)
	return n, err
}

func (c *countingFile) Seek(offset int64, whence int) (int64, error) {
	return c.f.Seek(offset, whence)
}
