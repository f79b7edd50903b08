/*
 * svg.c — the SVG plot writer of `d11 rehearse` (rehearse.h): time-series line charts
 * and lane charts, with the faults of the run drawn as shaded bands on the time axis.
 *
 * Every number of the picture is computed here, so the report needs only a browser (no
 * script, no network). Layout: a plot area of W × H pixels inside fixed paddings; the
 * y axis goes from 0 to a round top (5 steps of 1, 2, 2.5 or 5 × 10^k) labelled with the
 * unit given in ylabel; the x axis is time in seconds from 0 to xmax. Invariants: every
 * coordinate written is finite and inside the SVG's viewBox (values are clamped to the
 * plot area), so a NaN or a spike can never produce an unrenderable document.
 * Pure: writes into the caller's buffer, no global state; any thread.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "rehearse.h"

#define SV_W   900
#define SV_H   300
#define SV_L   72
#define SV_R   160
#define SV_T   44
#define SV_B   46

void d11_rh_xml_text(d11_buf *b, const char *s)
{
    for (const char *p = s ? s : ""; *p; p++) {
        if (*p == '<') d11_buf_puts(b, "&lt;");
        else if (*p == '>') d11_buf_puts(b, "&gt;");
        else if (*p == '&') d11_buf_puts(b, "&amp;");
        else if (*p == '"') d11_buf_puts(b, "&quot;");
        else d11_buf_append(b, p, 1);
    }
}

/* A round step such that 5 of them cover max (max > 0). */
static double round_step(double max)
{
    if (!(max > 0) || !isfinite(max)) return 1;
    double raw = max / 5, mag = pow(10, floor(log10(raw))), f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * mag;
}

static void num_label(char *out, size_t n, double v)
{
    if (fabs(v) >= 1e6) snprintf(out, n, "%.3gM", v / 1e6);
    else if (fabs(v) >= 1e4) snprintf(out, n, "%.3gk", v / 1e3);
    else snprintf(out, n, "%g", round(v * 1000) / 1000);
}

typedef struct frame {
    double xmax, ytop;
    int    pw, ph;
} frame;

static double fx(const frame *f, double v)
{
    if (!isfinite(v) || v < 0) v = 0;
    if (v > f->xmax) v = f->xmax;
    return SV_L + v / f->xmax * f->pw;
}

static double fy(const frame *f, double v)
{
    if (!isfinite(v) || v < 0) v = 0;
    if (v > f->ytop) v = f->ytop;
    return SV_T + f->ph - v / f->ytop * f->ph;
}

/* The fault bands: shaded (under the data) or as outlines with labels (over lanes). */
static void draw_bands(d11_buf *b, const d11_rh_chart *c, const frame *f, bool over)
{
    for (int i = 0; i < c->nbands; i++) {
        const d11_rh_band *bd = &c->bands[i];
        double x0 = fx(f, bd->x0), x1 = fx(f, bd->x1 > bd->x0 ? bd->x1 : bd->x0);
        if (x1 - x0 < 2) x1 = x0 + 2;
        d11_buf_printf(b,
                       "<rect class=\"band\" x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\" "
                       "fill-opacity=\"0.18\" stroke=\"#c49000\" stroke-opacity=\"0.8\"%s/><text x=\"%.1f\" y=\"%d\" "
                       "font-size=\"10\" fill=\"#6b5500\">",
                       x0, SV_T, x1 - x0, f->ph, over ? "none" : "#f4b400", over ? " stroke-width=\"2\"" : "", x0 + 2,
                       SV_T - 3 - 10 * (i % 2));
        d11_rh_xml_text(b, bd->label);
        d11_buf_puts(b, "</text>\n");
    }
}

/* Open the <svg>, title, bands (unless lanes draw them over), x axis (seconds). */
static void open_chart(d11_buf *b, const d11_rh_chart *c, const frame *f, bool bands_under)
{
    d11_buf_printf(b,
                   "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"plot\" id=\"%s\" width=\"%d\" height=\"%d\" "
                   "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n"
                   "<rect width=\"100%%\" height=\"100%%\" fill=\"#fff\"/>\n<text x=\"%d\" y=\"18\" font-size=\"15\" "
                   "font-weight=\"bold\">",
                   c->id ? c->id : "plot", SV_W, SV_H, SV_W, SV_H, SV_L);
    d11_rh_xml_text(b, c->title);
    d11_buf_puts(b, "</text>\n");
    if (bands_under) draw_bands(b, c, f, false);
    double xs = round_step(f->xmax);
    for (double v = 0; v <= f->xmax + xs / 100; v += xs) {
        char t[32];
        num_label(t, sizeof t, v);
        d11_buf_printf(b,
                       "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\" stroke=\"#888\"/>"
                       "<text class=\"xtick\" x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n",
                       fx(f, v), fx(f, v), SV_T + f->ph, SV_T + f->ph + 5, fx(f, v), SV_T + f->ph + 18, t);
    }
    d11_buf_printf(b,
                   "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"#000\"/>"
                   "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"#000\"/>\n"
                   "<text class=\"xlabel\" x=\"%d\" y=\"%d\" text-anchor=\"middle\">",
                   SV_L, SV_L + f->pw, SV_T + f->ph, SV_T + f->ph, SV_L, SV_L, SV_T, SV_T + f->ph,
                   SV_L + f->pw / 2, SV_H - 8);
    d11_rh_xml_text(b, c->xlabel);
    d11_buf_printf(b, "</text>\n<text class=\"ylabel\" transform=\"translate(16,%d) rotate(-90)\" "
                      "text-anchor=\"middle\">", SV_T + f->ph / 2);
    d11_rh_xml_text(b, c->ylabel);
    d11_buf_puts(b, "</text>\n");
}

static double data_xmax(const d11_rh_chart *c, const d11_rh_line *ls, int nl)
{
    double xmax = c->xmax;
    if (xmax <= 0)
        for (int k = 0; k < nl; k++)
            for (int i = 0; i < ls[k].n; i++)
                if (isfinite(ls[k].x[i]) && ls[k].x[i] > xmax) xmax = ls[k].x[i];
    return xmax > 0 ? xmax : 1;
}

void d11_rh_svg_lines(d11_buf *b, const d11_rh_chart *c, const d11_rh_line *ls, int nl)
{
    D11_ASSERT(nl >= 0 && (nl == 0 || ls));
    frame f = {.pw = SV_W - SV_L - SV_R, .ph = SV_H - SV_T - SV_B};
    f.xmax = data_xmax(c, ls, nl);
    double ymax = 0;
    for (int k = 0; k < nl; k++)
        for (int i = 0; i < ls[k].n; i++)
            if (isfinite(ls[k].y[i]) && ls[k].y[i] > ymax) ymax = ls[k].y[i];
    double ys = round_step(ymax);
    f.ytop = ys * ceil(ymax / ys);
    if (f.ytop <= 0) f.ytop = ys * 5;
    open_chart(b, c, &f, true);
    for (double v = 0; v <= f.ytop + ys / 2; v += ys) {
        char t[32];
        num_label(t, sizeof t, v);
        d11_buf_printf(b,
                       "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>"
                       "<text class=\"ytick\" x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                       SV_L, SV_L + f.pw, fy(&f, v), fy(&f, v), SV_L - 6, fy(&f, v) + 4, t);
    }
    for (int k = 0; k < nl; k++) {
        const d11_rh_line *l = &ls[k];
        d11_buf_puts(b, "<g class=\"series\" data-name=\"");
        d11_rh_xml_text(b, l->name);
        d11_buf_printf(b, "\" data-points=\"%d\"><polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"",
                       l->n, l->color, l->dashed ? " stroke-dasharray=\"6 4\"" : "");
        for (int i = 0; i < l->n; i++)
            d11_buf_printf(b, "%s%.1f,%.1f", i ? " " : "", fx(&f, l->x[i]), fy(&f, l->y[i]));
        d11_buf_puts(b, "\"/>\n");
        for (int i = 0; i < l->n; i++)
            d11_buf_printf(b, "<circle class=\"pt\" cx=\"%.1f\" cy=\"%.1f\" r=\"1.8\" fill=\"%s\"/>", fx(&f, l->x[i]),
                           fy(&f, l->y[i]), l->color);
        d11_buf_printf(b,
                       "</g>\n<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"3\"/>"
                       "<text class=\"legend\" x=\"%d\" y=\"%d\">",
                       SV_L + f.pw + 12, SV_L + f.pw + 30, SV_T + 10 + 18 * k, SV_T + 10 + 18 * k, l->color,
                       SV_L + f.pw + 36, SV_T + 14 + 18 * k);
        d11_rh_xml_text(b, l->name);
        d11_buf_puts(b, "</text>\n");
    }
    d11_buf_puts(b, "</svg>\n");
}

void d11_rh_svg_lanes(d11_buf *b, const d11_rh_chart *c, const char *const *lane_names, int nlanes,
                      const double *x, const int8_t *const *state, int n)
{
    D11_ASSERT(nlanes >= 0 && n >= 0);
    static const char *const fill[] = {"#2ca02c", "#ff7f0e", "#d62728"};
    static const char *const what[] = {"up", "breaker open", "down"};
    frame f = {.pw = SV_W - SV_L - SV_R, .ph = SV_H - SV_T - SV_B, .ytop = nlanes > 0 ? nlanes : 1};
    f.xmax = c->xmax > 0 ? c->xmax : (n > 0 ? x[n - 1] + 1 : 1);
    open_chart(b, c, &f, false);
    double lh = (double)f.ph / f.ytop;
    for (int k = 0; k < nlanes; k++) {
        double y0 = SV_T + lh * k;
        d11_buf_printf(b, "<text class=\"ytick\" x=\"%d\" y=\"%.1f\" text-anchor=\"end\">", SV_L - 6, y0 + lh / 2 + 4);
        d11_rh_xml_text(b, lane_names[k]);
        d11_buf_printf(b, "</text>\n<g class=\"series\" data-name=\"lane %d\" data-points=\"%d\">", k, n);
        for (int i = 0; i < n; i++) {
            int s = state[k][i];
            if (s < 0 || s > 2) continue;
            double x0 = fx(&f, x[i]), x1 = fx(&f, i + 1 < n ? x[i + 1] : x[i] + 1);
            d11_buf_printf(b,
                           "<rect class=\"pt\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\" "
                           "data-state=\"%s\"/>",
                           x0, y0 + lh * 0.15, x1 - x0 > 0.5 ? x1 - x0 : 0.5, lh * 0.7, fill[s], what[s]);
        }
        d11_buf_puts(b, "</g>\n");
    }
    draw_bands(b, c, &f, true);
    for (int s = 0; s < 3; s++)
        d11_buf_printf(b,
                       "<rect x=\"%d\" y=\"%d\" width=\"18\" height=\"10\" fill=\"%s\"/><text class=\"legend\" "
                       "x=\"%d\" y=\"%d\">%s</text>\n",
                       SV_L + f.pw + 12, SV_T + 4 + 18 * s, fill[s], SV_L + f.pw + 36, SV_T + 14 + 18 * s, what[s]);
    d11_buf_puts(b, "</svg>\n");
}
