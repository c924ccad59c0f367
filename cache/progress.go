package cache

import "io"

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
