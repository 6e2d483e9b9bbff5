// The pages' icons, as inline SVG: no icon font and no emoji font needed (a 👍 without one
// is an empty box). Strokes in currentColor, so an icon takes its button's colour. Shapes
// after Feather (MIT licence), drawn on a 24-unit grid.
import { el } from "./common.js";

const SHAPES = {
  menu: ["M4 6h16", "M4 12h16", "M4 18h16"],
  close: ["M6 6l12 12", "M18 6L6 18"],
  plus: ["M12 5v14", "M5 12h14"],
  send: ["M22 2L11 13", "M22 2l-7 20-4-9-9-4z"],
  stop: ["M7 7h10v10H7z"],
  "thumbs-up": [
    "M14 9V5a3 3 0 0 0-3-3l-4 9v11h11.3a2 2 0 0 0 2-1.7l1.4-9a2 2 0 0 0-2-2.3z",
    "M7 22H4a2 2 0 0 1-2-2v-7a2 2 0 0 1 2-2h3",
  ],
  "thumbs-down": [
    "M10 15v4a3 3 0 0 0 3 3l4-9V2H5.7a2 2 0 0 0-2 1.7l-1.4 9a2 2 0 0 0 2 2.3z",
    "M17 2h2.7A2.3 2.3 0 0 1 22 4v7a2.3 2.3 0 0 1-2.3 2H17",
  ],
  regenerate: ["M1 4v6h6", "M3.5 15a9 9 0 1 0 2.1-9.4L1 10"],
  edit: ["M17 3a2.8 2.8 0 1 1 4 4L7.5 20.5 2 22l1.5-5.5z"],
  user: ["M20 21v-2a4 4 0 0 0-4-4H8a4 4 0 0 0-4 4v2", "M12 11a4 4 0 1 0 0-8 4 4 0 0 0 0 8z"],
  assistant: ["M5 8h14v11H5z", "M12 4v4", "M9 13h.01", "M15 13h.01", "M2 13h3", "M19 13h3"],
  source: ["M14 2H6a2 2 0 0 0-2 2v16a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V8z", "M14 2v6h6", "M8 13h8", "M8 17h5"],
};

/** An SVG icon, hidden from screen readers: the control it sits in carries the name. */
export function icon(name) {
  return el(
    "svg:svg",
    {
      class: `icon icon-${name}`, viewBox: "0 0 24 24", width: 18, height: 18, fill: "none",
      stroke: "currentColor", "stroke-width": 2, "stroke-linecap": "round",
      "stroke-linejoin": "round", "aria-hidden": "true", focusable: "false",
    },
    SHAPES[name].map((d) => el("svg:path", { d })),
  );
}
