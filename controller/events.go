package controller

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"unicode/utf8"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
)

// EventComponent is the source component of the Events nodegress records;
// the source host is the agent's node name.
const EventComponent = "nodegress"

// Reasons of the Warning Events recorded on objects nodegress cannot serve
// as written. Objects nodegress merely skips (another controller's Ingress,
// another proxy's Service) get none.
const (
	ReasonInvalidIngress       = "InvalidIngress"
	ReasonInvalidService       = "InvalidService"
	ReasonInvalidEndpointSlice = "InvalidEndpointSlice"
	ReasonInvalidAnnotation    = "InvalidAnnotation"
	ReasonUnknownAnnotation    = "UnknownAnnotation"
	// ReasonRefusedAnnotation: the Ingress carries an annotation
	// nodegress refuses whatever its value (an nginx snippet, a security
	// feature it does not have) and is not served.
	ReasonRefusedAnnotation  = "RefusedAnnotation"
	ReasonMissingSecret      = "MissingSecret"
	ReasonInvalidCertificate = "InvalidCertificate"
	ReasonBackendNotFound    = "BackendNotFound"
	ReasonUnsupportedBackend = "UnsupportedBackend"
	ReasonFrontendConflict   = "FrontendConflict"
	// ReasonUnsupportedServiceField: the Service uses a field the
	// datapath does not implement (see serviceFields); the message says
	// what nodegress does instead.
	ReasonUnsupportedServiceField = "UnsupportedServiceField"
)

// maxEventMessage keeps Event messages within what the API server accepts.
const maxEventMessage = 1024

// reasonError tags a problem with the reason of its Event. Its message is
// the wrapped error's, so logs and issue deduplication do not change.
type reasonError struct {
	reason string
	err    error
}

func withReason(reason string, err error) error { return &reasonError{reason: reason, err: err} }

func (e *reasonError) Error() string { return e.err.Error() }
func (e *reasonError) Unwrap() error { return e.err }

// eventReason picks the reason of the Event for a problem: the one it was
// tagged with, else "Invalid" and the object's kind.
func eventReason(oe *ObjectError) string {
	var ae *AnnotationError
	if errors.As(oe.Err, &ae) {
		if errors.Is(ae.Err, errAnnotationRefused) {
			return ReasonRefusedAnnotation
		}
		return ReasonInvalidAnnotation
	}
	var re *reasonError
	if errors.As(oe.Err, &re) {
		return re.reason
	}
	return "Invalid" + oe.Kind
}

// eventMessage is the problem without the object's name, which the Event
// already carries.
func eventMessage(oe *ObjectError) string {
	msg := oe.Err.Error()
	if oe.Port != "" {
		msg = "port " + oe.Port + ": " + msg
	}
	if len(msg) <= maxEventMessage {
		return msg
	}
	cut := maxEventMessage - len("...")
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + "..."
}

// newEventRecorder records Events through the API server until ctx is
// done. Recording never blocks the caller: the broadcaster queues Events
// (dropping them when its queue is full) and writes them from its own
// goroutine, retrying while the API server is away.
//
// core/v1 Events, as `kubectl describe` shows them; writing them needs
// create and patch on events in the "" API group (patch for repeats the
// recorder aggregates into one Event).
func newEventRecorder(ctx context.Context, client kubernetes.Interface, node string, log *slog.Logger) record.EventRecorder {
	ctx = logr.NewContextWithSlogLogger(ctx, log.With("component", "events"))
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	return b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: EventComponent, Host: node})
}

// recordEvent records a Warning Event on the object a problem is about.
// Objects the informers do not know get none: an Event without the
// object's UID would not show up in `kubectl describe`, and one on an
// object that does not exist (a missing publish Service) helps no one.
func (c *Controller) recordEvent(oe *ObjectError) {
	if c.events == nil || oe.Skipped {
		return
	}
	ref := c.objectRef(oe.Kind, oe.Object)
	if ref == nil {
		return
	}
	c.events.Event(ref, corev1.EventTypeWarning, eventReason(oe), eventMessage(oe))
}

// objectRef finds the object of an ObjectError in the listers.
func (c *Controller) objectRef(kind, key string) *corev1.ObjectReference {
	ns, name, ok := strings.Cut(key, "/")
	if !ok {
		return nil
	}
	var obj metav1.Object
	var apiVersion string
	var err error
	switch kind {
	case "Service":
		if c.services == nil {
			return nil
		}
		apiVersion = "v1"
		obj, err = c.services.Services(ns).Get(name)
	case "EndpointSlice":
		if c.slices == nil {
			return nil
		}
		apiVersion = "discovery.k8s.io/v1"
		obj, err = c.slices.EndpointSlices(ns).Get(name)
	case "Ingress":
		if c.ingresses == nil {
			return nil
		}
		apiVersion = "networking.k8s.io/v1"
		obj, err = c.ingresses.Ingresses(ns).Get(name)
	default:
		return nil
	}
	if err != nil {
		return nil
	}
	return &corev1.ObjectReference{
		Kind:       kind,
		APIVersion: apiVersion,
		Namespace:  obj.GetNamespace(),
		Name:       obj.GetName(),
		UID:        obj.GetUID(),
	}
}
