/* PYENGINE_API marks what libpyengine exports; everything else in the
 * library is built with hidden visibility (GCC and Clang). Valid C and C++. */
#ifndef PYENGINE_EXPORT_H_
#define PYENGINE_EXPORT_H_

#if defined(__GNUC__) || defined(__clang__)
#  define PYENGINE_API __attribute__((visibility("default")))
#else
#  define PYENGINE_API
#endif

#endif /* PYENGINE_EXPORT_H_ */
