/** On/off settings, as the edge and the worker read them from flags and environment variables. */

const ON = ["1", "on", "true", "yes"], OFF = ["0", "off", "false", "no"];

/**
 * An on/off value: 1, on, true, yes or 0, off, false, no (any case, surrounding spaces ignored);
 * undefined when unset or empty. Anything else throws, naming the setting.
 */
export function parseOnOff(name: string, value: string | undefined): boolean | undefined {
  if (value === undefined || value.trim() === "") return undefined;
  const v = value.trim().toLowerCase();
  if (ON.includes(v)) return true;
  if (OFF.includes(v)) return false;
  throw new Error(`${name}: expected on or off, got ${JSON.stringify(value)}`);
}
