/** Counters of one session, for metrics and tests. */
export interface SessionStats {
  /** Frames sent, per priority class: [control, on-demand, bulk]; session frames excluded. */
  framesSent: [number, number, number];
  /** Frames received, per priority class of their stream. */
  framesReceived: [number, number, number];
  /** Stream frames waiting in the scheduler, per priority class. */
  framesQueued: [number, number, number];
  /** Bytes written to / read from the transport, frame headers included. */
  bytesSent: number;
  /** Bytes read from the transport. */
  bytesReceived: number;
  /** Streams currently open. */
  openStreams: number;
  /** Smoothed round-trip time in ms, or undefined before the first PONG. */
  rttMs: number | undefined;
}
