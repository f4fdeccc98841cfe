// Dates in the city's time zone (a fixed UTC offset from the gateway's settings).

let offsetMin = 480;

export function setOffset(min) {
  if (Number.isFinite(min)) offsetMin = min;
}

function parts(ms) {
  const d = new Date(ms + offsetMin * 60000);
  const p = (n) => String(n).padStart(2, "0");
  return {
    date: `${d.getUTCFullYear()}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())}`,
    time: `${p(d.getUTCHours())}:${p(d.getUTCMinutes())}`,
    seconds: p(d.getUTCSeconds()),
  };
}

/** 2026-12-03 18:20 */
export function fmt(ms) {
  if (ms === null || ms === undefined) return "";
  const x = parts(ms);
  return `${x.date} ${x.time}`;
}

/** 18:20:05 */
export function fmtTime(ms) {
  const x = parts(ms);
  return `${x.time}:${x.seconds}`;
}

/** 18:20, or the date too when not today (in the city's zone). */
export function fmtShort(ms, now) {
  const x = parts(ms);
  return x.date === parts(now ?? Date.now()).date ? x.time : `${x.date} ${x.time}`;
}

/** The start of the city's day containing `ms`. */
export function dayStart(ms) {
  const local = ms + offsetMin * 60000;
  return local - (((local % 86400000) + 86400000) % 86400000) - offsetMin * 60000;
}

/** "UTC+8" */
export function zoneName() {
  const sign = offsetMin < 0 ? "-" : "+";
  const a = Math.abs(offsetMin);
  return `UTC${sign}${Math.floor(a / 60)}${a % 60 ? ":" + String(a % 60).padStart(2, "0") : ""}`;
}

/** The city's date of `ms`: "2026-12-03". */
export function localDate(ms) {
  return parts(ms).date;
}
