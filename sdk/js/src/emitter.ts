/** A tiny typed event emitter (no Node `events` import, so it runs in browsers and React Native). */

export type Listener<T> = (event: T) => void;

export class Emitter<Events extends object> {
  private readonly listeners = new Map<keyof Events, Set<Listener<never>>>();

  /** Listen; returns the function that stops listening. */
  on<K extends keyof Events>(name: K, listener: Listener<Events[K]>): () => void {
    let set = this.listeners.get(name);
    if (!set) this.listeners.set(name, (set = new Set()));
    set.add(listener as Listener<never>);
    return () => this.off(name, listener);
  }

  off<K extends keyof Events>(name: K, listener: Listener<Events[K]>): void {
    this.listeners.get(name)?.delete(listener as Listener<never>);
  }

  protected emit<K extends keyof Events>(name: K, event: Events[K]): void {
    for (const l of [...(this.listeners.get(name) ?? [])]) {
      try {
        (l as Listener<Events[K]>)(event);
      } catch (err) {
        // A listener's bug must not break the client's state machine.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}
