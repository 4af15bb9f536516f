/** One counter per priority class, indexed by the priority number. */
export type PerPriority = [number, number, number, number];

/** Counters of one session, for metrics and tests. */
export interface SessionStats {
  /** Frames sent, per priority class: indexed by priority: [control, on-demand, bulk, memory]; session frames excluded. */
  framesSent: PerPriority;
  /** Frames received, per priority class of their stream. */
  framesReceived: PerPriority;
  /** Stream frames waiting in the scheduler, per priority class. */
  framesQueued: PerPriority;
  /** Bytes written to / read from the transport, frame headers included. */
  bytesSent: number;
  /** Bytes read from the transport. */
  bytesReceived: number;
  /** Streams currently open. */
  openStreams: number;
  /** Smoothed round-trip time in ms, or undefined before the first PONG. */
  rttMs: number | undefined;
}
