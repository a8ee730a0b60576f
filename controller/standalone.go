package controller

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gwapi "sigs.k8s.io/gateway-api/apis/v1"
	gwfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	"github.com/fsnotify/fsnotify"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// Timing of the standalone source. Changes are picked up through inotify
// within debounce; the periodic rescan is only a safety net for missed
// events, and the poll interval bounds how long a missing directory (or a
// lost watch) goes unnoticed.
const (
	standaloneDebounce     = 50 * time.Millisecond
	standalonePoll         = time.Second
	standaloneRescanEvery  = 10 // polls
	standaloneWatchTimeout = 5 * time.Second
)

// standaloneSource loads a directory of Kubernetes YAML files into an
// in-memory clientset (client-go's fake), which the controller's informers
// watch as they would a real API server.
//
// Semantics, chosen to behave like `kubectl apply` against an API server:
//
//   - Every *.yaml and *.yml file directly in the directory is read (hidden
//     files are not: editors keep swap and lock files there); symlinks are
//     followed, so a mounted ConfigMap works. Files may hold several
//     documents and v1 Lists.
//   - An object that fails to decode or validate is rejected as a whole; if
//     the same file defined it before, that last good version stays, as
//     after a refused update. Other objects of the file are applied.
//   - A document too broken to tell which object it defines (YAML syntax
//     error, no name) makes the file keep all its previous objects that it
//     no longer defines, instead of deleting them; a file that cannot be
//     read keeps all its objects. Fixing the file applies it normally.
//   - Deleting a file deletes its objects. An unreadable directory keeps
//     everything.
//   - An object defined in two files is taken from the file that had it
//     first (on a fresh start, the first file by name); the other copy is
//     ignored with a warning until the first file drops it.
//
// Rescan and Run must not run concurrently.
type standaloneSource struct {
	dir    string
	log    *slog.Logger
	client *fake.Clientset
	// gwClient stores the Gateway API's kinds; gatewayOn says whether
	// their informers run.
	gwClient  *gwfake.Clientset
	gatewayOn atomic.Bool

	files   map[string]*fileState // by file name
	owners  map[objectKey]string  // file whose copy of the object is applied
	applied map[objectKey]appliedObject
	dups    map[string]bool // duplicate warnings already logged
	dirErr  string          // last directory error logged

	watchMu      sync.Mutex
	watched      map[schema.GroupVersionResource]bool
	watchesReady chan struct{}
}

type fileState struct {
	data    []byte
	objects map[objectKey]decodedObject
}

type appliedObject struct {
	gvr     schema.GroupVersionResource
	obj     decodedObject // as decoded, to compare with the next version
	created metav1.Time
}

func newStandaloneSource(dir string, log *slog.Logger) *standaloneSource {
	s := &standaloneSource{
		dir:          dir,
		log:          log.With("source", "standalone"),
		client:       fake.NewSimpleClientset(),
		gwClient:     gwfake.NewSimpleClientset(),
		files:        make(map[string]*fileState),
		owners:       make(map[objectKey]string),
		applied:      make(map[objectKey]appliedObject),
		dups:         make(map[string]bool),
		watched:      make(map[schema.GroupVersionResource]bool),
		watchesReady: make(chan struct{}),
	}
	// The tracker hands a watch the objects changed after the informer's
	// list, but a delete in that window would be lost. Knowing when every
	// informer watches lets Run hold changes back until then.
	watchReactor := func(tracker k8stesting.ObjectTracker) k8stesting.WatchReactionFunc {
		return func(action k8stesting.Action) (bool, watch.Interface, error) {
			var opts metav1.ListOptions
			if wa, ok := action.(k8stesting.WatchActionImpl); ok {
				opts = wa.ListOptions
			}
			w, err := tracker.Watch(action.GetResource(), action.GetNamespace(), opts)
			if err != nil {
				return true, nil, err
			}
			s.watchStarted(action.GetResource())
			return true, w, nil
		}
	}
	s.client.PrependWatchReactor("*", watchReactor(s.client.Tracker()))
	s.gwClient.PrependWatchReactor("*", watchReactor(s.gwClient.Tracker()))
	return s
}

// tracker is the object store of a kind.
func (s *standaloneSource) tracker(k kindInfo) k8stesting.ObjectTracker {
	if k.gvk.Group == gwapi.GroupName {
		return s.gwClient.Tracker()
	}
	return s.client.Tracker()
}

func (s *standaloneSource) watchStarted(gvr schema.GroupVersionResource) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	if s.watched[gvr] {
		return
	}
	s.watched[gvr] = true
	for _, k := range acceptedKinds {
		if !s.watched[k.gvr()] && (!k.gateway || s.gatewayOn.Load()) {
			return
		}
	}
	close(s.watchesReady)
}

// Run follows changes of the directory until ctx is done.
func (s *standaloneSource) Run(ctx context.Context) {
	select {
	case <-s.watchesReady:
	case <-ctx.Done():
		return
	case <-time.After(standaloneWatchTimeout):
		s.log.Warn("informers did not all start watching; applying file changes anyway")
	}

	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.log.Warn("no file notifications, polling the directory", "dir", s.dir, "err", err)
	} else {
		defer w.Close()
	}
	var events chan fsnotify.Event
	var errs chan error
	if w != nil {
		events, errs = w.Events, w.Errors
	}
	watching := false
	watch := func() {
		if w == nil || watching {
			return
		}
		if err := w.Add(s.dir); err != nil {
			s.log.Debug("watch directory", "dir", s.dir, "err", err)
			return
		}
		watching = true
	}

	watch()
	s.Rescan() // whatever changed since the initial load

	poll := time.NewTicker(standalonePoll)
	defer poll.Stop()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	pending := false
	schedule := func() {
		if !pending {
			pending = true
			debounce.Reset(standaloneDebounce)
		}
	}
	polls := 0
	for {
		select {
		case <-ctx.Done():
			debounce.Stop()
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if filepath.Clean(ev.Name) == filepath.Clean(s.dir) && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				// The directory itself went away; inotify dropped the
				// watch. Polling re-adds it when it comes back.
				watching = false
				_ = w.Remove(s.dir)
			}
			schedule()
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			// Typically a queue overflow: events were lost, so look at
			// everything.
			s.log.Warn("directory watch", "dir", s.dir, "err", err)
			schedule()
		case <-debounce.C:
			pending = false
			s.Rescan()
		case <-poll.C:
			polls++
			wasWatching := watching
			watch()
			if !watching || !wasWatching || polls%standaloneRescanEvery == 0 {
				s.Rescan()
			}
		}
	}
}

func isManifest(name string) bool {
	if strings.HasPrefix(name, ".") {
		return false
	}
	ext := filepath.Ext(name)
	return ext == ".yaml" || ext == ".yml"
}

// Rescan reads the directory and applies what changed to the clientset.
func (s *standaloneSource) Rescan() {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		if msg := err.Error(); msg != s.dirErr {
			s.dirErr = msg
			s.log.Warn("read standalone directory; keeping current objects and retrying", "dir", s.dir, "err", err)
		}
		return
	}
	if s.dirErr != "" {
		s.dirErr = ""
		s.log.Info("standalone directory readable", "dir", s.dir)
	}

	present := make(map[string]bool)
	for _, e := range entries {
		name := e.Name()
		if !isManifest(name) {
			continue
		}
		path := filepath.Join(s.dir, name)
		st, err := os.Stat(path) // follows symlinks
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // dangling symlink, or removed since ReadDir
			}
			present[name] = true // keep its objects
			s.log.Warn("stat file; keeping its objects", "file", path, "err", err)
			continue
		}
		if !st.Mode().IsRegular() {
			continue
		}
		present[name] = true
		data, err := os.ReadFile(path)
		if err != nil {
			s.log.Warn("read file; keeping its objects", "file", path, "err", err)
			continue
		}
		prev := s.files[name]
		if prev != nil && bytes.Equal(prev.data, data) {
			continue
		}
		s.files[name] = s.parseFile(path, data, prev)
	}
	for name := range s.files {
		if !present[name] {
			delete(s.files, name)
			s.log.Info("file removed; deleting its objects", "file", filepath.Join(s.dir, name))
		}
	}
	s.reconcile()
}

// parseFile decodes a changed file and decides, object by object, what it
// now defines (see standaloneSource for the rules).
func (s *standaloneSource) parseFile(path string, data []byte, prev *fileState) *fileState {
	objs, errs := decodeFile(data)
	next := &fileState{data: data, objects: make(map[objectKey]decodedObject, len(objs))}
	for _, o := range objs {
		if first, dup := next.objects[o.Key]; dup {
			s.log.Warn("object defined twice in one file; ignoring the later one",
				"file", path, "doc", o.Doc, "line", o.Line, "kind", o.Key.Kind, "object", o.Key.String(), "first_doc", first.Doc)
			continue
		}
		next.objects[o.Key] = o
	}
	unidentified := false
	for _, e := range errs {
		attrs := []any{"file", path, "doc", e.Doc, "line", e.Line}
		if e.Key.Kind != "" {
			attrs = append(attrs, "kind", e.Key.Kind, "object", e.Key.String())
		}
		attrs = append(attrs, "err", e.Err)
		switch {
		case e.Ignored:
			s.log.Debug("ignoring document", attrs...)
		case e.Key.Kind == "":
			unidentified = true
			s.log.Warn("invalid document", attrs...)
		default:
			if _, ok := next.objects[e.Key]; ok {
				// Another document of the file defines it validly.
				s.log.Warn("invalid object; ignored", attrs...)
				continue
			}
			if old, ok := prev.object(e.Key); ok {
				next.objects[e.Key] = old
				s.log.Warn("invalid object; keeping its previous version", attrs...)
			} else {
				s.log.Warn("invalid object; not loaded", attrs...)
			}
		}
	}
	if unidentified && prev != nil {
		kept := 0
		for k, o := range prev.objects {
			if _, ok := next.objects[k]; !ok {
				next.objects[k] = o
				kept++
			}
		}
		if kept > 0 {
			s.log.Warn("file has unreadable documents; keeping the objects it no longer defines until it is fixed",
				"file", path, "kept", kept)
		}
	}
	return next
}

func (f *fileState) object(k objectKey) (decodedObject, bool) {
	if f == nil {
		return decodedObject{}, false
	}
	o, ok := f.objects[k]
	return o, ok
}

// reconcile merges the files' objects and creates, updates and deletes
// objects in the clientset to match.
func (s *standaloneSource) reconcile() {
	names := make([]string, 0, len(s.files))
	for n := range s.files {
		names = append(names, n)
	}
	slices.Sort(names)
	candidates := make(map[objectKey][]string)
	for _, n := range names {
		for k := range s.files[n].objects {
			candidates[k] = append(candidates[k], n)
		}
	}

	desired := make(map[objectKey]decodedObject, len(candidates))
	owners := make(map[objectKey]string, len(candidates))
	dups := make(map[string]bool)
	for k, files := range candidates {
		owner := files[0]
		if prev, ok := s.owners[k]; ok && slices.Contains(files, prev) {
			owner = prev
		}
		desired[k] = s.files[owner].objects[k]
		owners[k] = owner
		for _, f := range files {
			if f == owner {
				continue
			}
			id := k.String() + "\x00" + f + "\x00" + owner
			dups[id] = true
			if !s.dups[id] {
				o := s.files[f].objects[k]
				s.log.Warn("object defined in two files; ignoring this copy",
					"file", filepath.Join(s.dir, f), "doc", o.Doc, "line", o.Line, "kind", k.Kind, "object", k.String(),
					"defined_in", filepath.Join(s.dir, owner))
			}
		}
	}
	s.dups = dups

	var created, updated, deleted int
	for k, o := range desired {
		tracker := s.tracker(acceptedKinds[k.Kind])
		gvr := acceptedKinds[k.Kind].gvr()
		old, exists := s.applied[k]
		if exists && (old.obj.Object == o.Object || equality.Semantic.DeepEqual(old.obj.Object, o.Object)) {
			s.applied[k] = appliedObject{gvr: gvr, obj: o, created: old.created}
			continue
		}
		// Like the API server, stamp objects with their creation time
		// (kept across updates): translation gives a contested frontend to
		// the older service, so a new file cannot take over a frontend
		// that is already served.
		createdAt := old.created
		if !exists {
			createdAt = metav1.Now()
		}
		obj := o.Object.DeepCopyObject()
		if m, err := meta.Accessor(obj); err == nil && m.GetCreationTimestamp().Time.IsZero() {
			m.SetCreationTimestamp(createdAt)
		}
		var err error
		if exists {
			err = tracker.Update(gvr, obj, k.Namespace)
		} else {
			err = tracker.Create(gvr, obj, k.Namespace)
			if apierrors.IsAlreadyExists(err) {
				err = tracker.Update(gvr, obj, k.Namespace)
			}
		}
		if err != nil {
			// Left as it was in applied, so the next rescan tries again.
			s.log.Error("store object", "file", filepath.Join(s.dir, owners[k]), "kind", k.Kind, "object", k.String(), "err", err)
			continue
		}
		if exists {
			updated++
		} else {
			created++
		}
		s.log.Debug("object stored", "file", filepath.Join(s.dir, owners[k]), "doc", o.Doc, "kind", k.Kind, "object", k.String())
		s.applied[k] = appliedObject{gvr: gvr, obj: o, created: createdAt}
	}
	for k, a := range s.applied {
		if _, ok := desired[k]; ok {
			continue
		}
		if err := s.tracker(acceptedKinds[k.Kind]).Delete(a.gvr, k.Namespace, k.Name); err != nil && !apierrors.IsNotFound(err) {
			s.log.Error("delete object", "kind", k.Kind, "object", k.String(), "err", err)
			continue
		}
		delete(s.applied, k)
		deleted++
		s.log.Debug("object deleted", "kind", k.Kind, "object", k.String())
	}
	s.owners = owners
	if created+updated+deleted > 0 {
		s.log.Info("standalone objects changed", "dir", s.dir, "created", created, "updated", updated, "deleted", deleted, "objects", len(s.applied))
	}
}

func (k kindInfo) gvr() schema.GroupVersionResource {
	if k.resource != "" {
		return k.gvk.GroupVersion().WithResource(k.resource)
	}
	// Exact for the other accepted kinds (services, endpointslices, ...).
	gvr, _ := meta.UnsafeGuessKindToResource(k.gvk)
	return gvr
}
