/**
 * The names of the tangent inputs of the JVP graphs (a module of constants only, so that the inference
 * thread can name them without loading the graph tools).
 */

/** The tangent inputs of a JVP graph: dx (shaped like x) and dt ([B]). */
export const JVP_INPUTS = { x: "dx", t: "dt" } as const;

/**
 * The per-row coefficients of the tangent made inside the graph from its own output,
 * dx_used = dx + tangent_out ⊙ out + tangent_x ⊙ x (onnx/ode_jvp.ts), each [B].
 */
export const ODE_TANGENT_INPUTS = { out: "tangent_out", x: "tangent_x" } as const;
