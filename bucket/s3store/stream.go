package s3store

import (
	"context"
	"io"
	"os"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"golang.org/x/sys/unix"

	"github.com/nix-ota/nix-ota/bucket"
)

// streamPartSize is the first part size of a body of unknown size (and
// minio-go's smallest): a body that ends within it is one PUT; a longer
// one is a multipart upload that reads one part while the one before
// uploads.
const streamPartSize = 16 << 20

// partSize is the size of part i (from 0): 16 MiB for the first 2,000
// parts (32 GiB), doubling every 2,000 parts after, so the 10,000 parts
// S3 allows hold about 1 TiB.
func partSize(i int) int64 { return streamPartSize << min(i/2000, 4) }

// A part waits for its upload in kernel memory (a memfd; an unlinked
// temporary file where there is none), not in a Go buffer: it is written
// and read with system calls, so it costs the process no page faults,
// which on small VMs cost more than the copying. minio-go's own streaming
// allocates part buffers for every upload (~537 MiB each without a part
// size).
var stages = sync.Pool{New: func() any { return (*os.File)(nil) }}

func getStage() (*os.File, error) {
	if f := stages.Get().(*os.File); f != nil {
		return f, nil
	}
	if fd, err := unix.MemfdCreate("nix-ota-part", unix.MFD_CLOEXEC); err == nil {
		return os.NewFile(uintptr(fd), "nix-ota-part"), nil
	}
	f, err := os.CreateTemp("", "nix-ota-part-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	return f, nil
}

// putStage empties and rewinds a stage and keeps it for the next part (a
// stage the pool drops is closed by its finaliser).
func putStage(f *os.File) {
	if _, err := f.Seek(0, io.SeekStart); err != nil || f.Truncate(0) != nil {
		f.Close()
		return
	}
	stages.Put(f)
}

// fill copies up to n bytes of r into an empty stage; io.EOF means r had
// nothing left, and any other error is r's.
func fill(f *os.File, r io.Reader, n int64) (*io.SectionReader, error) {
	got, err := io.CopyN(f, r, n)
	if err == io.EOF && got > 0 {
		err = nil
	}
	return io.NewSectionReader(f, 0, got), err
}

// putStream uploads a body of unknown size: one PUT if it fits in the
// first part, else a multipart upload. A body that fails to read leaves
// no object: nothing was sent, or the multipart upload is aborted.
func (s *s3Store) putStream(ctx context.Context, key string, r io.Reader, o minio.PutObjectOptions) (string, error) {
	stage, err := getStage()
	if err != nil {
		return "", err
	}
	part, err := fill(stage, r, partSize(0))
	if err != nil && err != io.EOF {
		putStage(stage)
		return "", err
	}
	if part.Size() < partSize(0) { // the body ended within the first part
		defer putStage(stage)
		info, err := s.core.Client.PutObject(ctx, s.cfg.Bucket, s.key(key), part, part.Size(), o)
		if err != nil {
			return "", s.mapErr("put", key, err)
		}
		return bucket.TrimETag(info.ETag), nil
	}
	id, err := s.core.NewMultipartUpload(ctx, s.cfg.Bucket, s.key(key), o)
	if err != nil {
		putStage(stage)
		return "", s.mapErr("put", key, err)
	}
	parts, err := s.putParts(ctx, key, id, r, stage, part, o)
	if err == nil {
		var info minio.UploadInfo
		info, err = s.core.CompleteMultipartUpload(ctx, s.cfg.Bucket, s.key(key), id, parts, o)
		if err == nil {
			return bucket.TrimETag(info.ETag), nil
		}
		err = s.mapErr("put", key, err)
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	s.core.AbortMultipartUpload(actx, s.cfg.Bucket, s.key(key), id)
	return "", err
}

type partResult struct {
	part minio.CompletePart
	err  error
}

// putParts uploads the parts of multipart upload id, the first already
// in stage, the rest read from r while the one before uploads.
func (s *s3Store) putParts(ctx context.Context, key, id string, r io.Reader, stage *os.File, part *io.SectionReader, o minio.PutObjectOptions) ([]minio.CompletePart, error) {
	var parts []minio.CompletePart
	var uploading chan partResult
	wait := func() error {
		if uploading == nil {
			return nil
		}
		res := <-uploading
		uploading = nil
		parts = append(parts, res.part)
		return res.err
	}
	for i := 0; part.Size() > 0; i++ {
		if err := wait(); err != nil {
			putStage(stage)
			return nil, err
		}
		uploading = make(chan partResult, 1)
		go func(stage *os.File, part *io.SectionReader, num int, done chan<- partResult) {
			p, err := s.core.PutObjectPart(ctx, s.cfg.Bucket, s.key(key), id, num, part, part.Size(), minio.PutObjectPartOptions{DisableContentSha256: o.DisableContentSha256})
			putStage(stage)
			if err != nil {
				err = s.mapErr("put", key, err)
			}
			done <- partResult{minio.CompletePart{PartNumber: num, ETag: p.ETag}, err}
		}(stage, part, i+1, uploading)
		var err error
		if stage, err = getStage(); err != nil {
			wait()
			return nil, err
		}
		if part, err = fill(stage, r, partSize(i+1)); err != nil && err != io.EOF {
			putStage(stage)
			wait()
			return nil, err
		}
	}
	putStage(stage)
	return parts, wait()
}
