package cache

import (
	"bytes"
	"io"
	"sync"
)

// countingWriter passes writes on and reports the running total (report
// is optional).
type countingWriter struct {
	w      io.Writer
	n      int64
	report func(int64)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	if c.report != nil {
		c.report(c.n)
	}
	return n, err
}

// countingReader reports how many bytes an upload has taken, capped at
// size when size is known (a retried part is read again). Over a
// bytes.Reader it keeps ReadAt and Seek (countingReaderAt), so an S3
// client can still rewind for a retry; over a pipe it offers neither.
type countingReader struct {
	r      io.Reader
	size   int64 // 0: unknown
	report func(int64)
	mu     sync.Mutex
	n      int64
}

// add counts n more bytes; the report is made under the lock, so totals
// arrive in order even from parallel part uploads.
func (c *countingReader) add(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n += int64(n)
	if c.size > 0 {
		c.n = min(c.n, c.size)
	}
	c.report(c.n)
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.add(n)
	return n, err
}

// countingReaderAt is a countingReader over an in-memory body.
type countingReaderAt struct {
	*countingReader
	br *bytes.Reader
}

func newCountingReaderAt(br *bytes.Reader, report func(int64)) *countingReaderAt {
	return &countingReaderAt{countingReader: &countingReader{r: br, size: br.Size(), report: report}, br: br}
}

func (c *countingReaderAt) ReadAt(b []byte, off int64) (int, error) {
	n, err := c.br.ReadAt(b, off)
	c.add(n)
	return n, err
}

func (c *countingReaderAt) Seek(offset int64, whence int) (int64, error) {
	return c.br.Seek(offset, whence)
}
